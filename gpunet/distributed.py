"""Data-parallel training over MPI: one process per rank, one model replica on each.

``mpiexec -n N gpunet train ... --distributed`` (or ``fit(..., comm=Communicator())``) runs
the same program on N ranks. Every rank builds the model from one seed and rank 0 broadcasts
its weights anyway; every rank draws the same seeded permutation, and of each global batch
``perm[s*B:(s+1)*B]`` rank r takes the contiguous rows ``r*m//N : (r+1)*m//N`` (m the batch's
rows, so a ragged last batch may leave a rank none). With the loss averaged over the rank's
m_r rows, the mean gradient of the whole batch is

    dJ/dp = sum_r (m_r / m) * dJ_r/dp,

so each rank scales its gradient by m_r / m and one SUM all-reduce gives every rank the
single-process gradient, to float rounding; every rank then applies the same optimizer step.
The parameters travel as ONE flat buffer, with the step's loss, correct count and a stop flag
(``stop_flag``: which signal, if any) in its last three slots, so a step is exactly one
collective (plus three small ones per batch norm, which is synced over the ranks:
``batch_norm_allreduce``, docs/math.md).

Transports: MPI (mpi4py) carries everything on the numpy backend. On the cupy backend the
gradient buffer goes through NCCL (``cupy.cuda.nccl``, its unique id broadcast over MPI) when
every rank has a GPU of its own; ranks sharing a GPU (NCCL refuses those) or a missing NCCL
fall back to MPI through host memory, with a notice. The NCCL path needs GPUs to run and is
exercised only where the tests find them.

Failures end the whole job rather than hang it: collectives are non-blocking requests (or, for
NCCL, a CUDA event) polled against a deadline (``timeout`` seconds, default
``$GPUNET_COLLECTIVE_TIMEOUT`` or 600); a rank that waits longer prints one line and calls
``MPI_Abort``, which ends every rank. ``abort_on_error()`` does the same for an exception
raised on one rank, which would otherwise leave the others waiting in their next collective.
MPI's start is bounded by the same timeout (but at least 10 s): ``MPI_Init`` (run by the
first import of ``mpi4py.MPI``, ``import_mpi``) waits in C for every rank to start MPI, where no
deadline of Python's and no ``MPI_Abort`` reach, and a rank that exited before it did (a host
whose Python lacks gpunet) left the others there for good (MPICH's ``mpiexec`` does not end such
a job). The import runs under a watchdog, a small process spawned before it: if MPI is not up in
time it prints one line and ends its rank (SIGTERM, then SIGKILL), and the launcher ends the
job. There is none where the timeout is 0, where MPI is up already, or without
``posix_spawn`` (Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import signal
import sys
import time

import numpy as np

from .errors import ConfigError, GpunetError

INSTALL_HINT = "pip install 'gpunet[distributed]'"
#: seconds a collective may wait for the other ranks before the job is aborted
DEFAULT_TIMEOUT = 600.0
#: slots after the gradients in the step buffer: loss, correct count, stop flag (stop_flag)
STEP_EXTRAS = 3


class DistributedUnavailableError(GpunetError, RuntimeError):
    """Distributed training was asked for but mpi4py or an MPI library is missing."""


def import_mpi(timeout=None):
    """``mpi4py.MPI``, or DistributedUnavailableError saying what to install.

    The import starts MPI (``MPI_Init``), which waits in C for every rank of the job to start
    it too: where one exited before it did, the others wait for good. So the first import runs
    under a watchdog (``_start_watchdog``) that ends this process after ``timeout`` seconds
    (as ``Communicator``'s: None takes ``$GPUNET_COLLECTIVE_TIMEOUT``, else 600; 0 waits
    forever), and not before ``MIN_START_TIMEOUT`` (10 s); a script that needs MPI before its
    Communicator can call this for the same bound."""
    watchdog = None
    if "mpi4py.MPI" not in sys.modules and _mpi4py_found() and getattr(
            getattr(sys.modules.get("mpi4py"), "rc", None), "initialize", True):
        try:
            seconds = _resolve_timeout(timeout)
        except GpunetError:  # (said, and the job ended, once MPI is up: Communicator)
            seconds = DEFAULT_TIMEOUT
        # (a short collective timeout, to catch a stalled rank fast, must not end a job whose
        # hosts take some seconds more to import and start: the start gets at least this)
        watchdog = _start_watchdog(None if seconds is None else max(seconds, MIN_START_TIMEOUT))
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedUnavailableError(
            f"--distributed needs mpi4py and an MPI library: {INSTALL_HINT}") from None
    except Exception as e:  # mpi4py is there but finds no MPI library to load
        raise DistributedUnavailableError(
            f"mpi4py could not load an MPI library ({_first_line(e)}): {INSTALL_HINT}") from None
    finally:
        if watchdog is not None:
            _stop_watchdog(*watchdog)
    return MPI


def _mpi4py_found() -> bool:
    """Whether mpi4py is there to import (where it is not, no MPI starts: no watchdog)."""
    try:
        return importlib.util.find_spec("mpi4py") is not None
    except (ImportError, ValueError):
        return False


#: seconds the watchdog leaves a process between its SIGTERM and a SIGKILL
WATCHDOG_GRACE = 2.0
#: the fewest seconds MPI's start may take before the watchdog ends a rank, whatever the
#: collective timeout (which bounds it where longer)
MIN_START_TIMEOUT = 10.0


def _launcher_rank() -> str:
    """"gpunet: rank R of N: ", the head of a rank's line, with the rank and size that the
    launcher's environment gives (MPICH's Hydra, Open MPI, PMIx) before MPI can say them; as
    much of it as that says."""
    for rank, size in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                       ("PMIX_RANK", "PMIX_SIZE")):
        r, n = os.environ.get(rank, "").strip(), os.environ.get(size, "").strip()
        if r.isdigit():
            return f"gpunet: rank {r} of {n}: " if n.isdigit() else f"gpunet: rank {r}: "
    return "gpunet: "


#: the watchdog process's program (``python -I -S -c``): argv fd, parent, timeout, grace, line
_WATCH = """
import os, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # (a Ctrl-C to the group ends it quietly)
fd, parent, timeout, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), \\
    float(sys.argv[4])
try:
    if not select.select([fd], [], [], timeout)[0] and os.getppid() == parent:
        os.write(2, sys.argv[5].encode("utf-8", "replace"))
        os.kill(parent, signal.SIGTERM)
        if not select.select([fd], [], [], grace)[0] and os.getppid() == parent:
            os.kill(parent, signal.SIGKILL)
except OSError:
    pass
"""


def _start_watchdog(timeout):
    """Bound the wait for ``MPI_Init`` by ``timeout`` seconds (None: no bound): a watchdog
    process (``_WATCH``, started by ``posix_spawn``: a fork would run the at-fork handlers of
    the libraries loaded, and OpenBLAS's hung in 4 of 10 forks beside two threads doing GEMMs)
    waits on a pipe whose writing end only this process holds. ``_stop_watchdog`` closes it
    once MPI is up, and the watchdog, at the end of file, exits at once (as it does when this
    process dies). If the time runs out first, it prints one line and ends this process, stuck
    in C where no Python code of its own can run: SIGTERM, which ends it as the launcher's own
    stop does (Python leaves SIGTERM to the system), then SIGKILL should it still be there
    ``WATCHDOG_GRACE`` seconds later (a handler of the script's own, which cannot run inside
    MPI_Init); never a process that is no longer its parent. It holds none of this process's
    files but stderr and the pipe. Returns (its pid, the pipe's writing end), or None: no
    bound, or no ``posix_spawn`` (Windows)."""
    if timeout is None or not hasattr(os, "posix_spawn") or not sys.executable:
        return None
    line = (f"{_launcher_rank()}error: MPI did not start within "
            f"{timeout:g} s: another rank may have exited before MPI started (see its output); "
            "ending this rank (GPUNET_COLLECTIVE_TIMEOUT or --collective-timeout sets the "
            f"limit, at least {MIN_START_TIMEOUT:g} s)\n")
    r, w = os.pipe()  # (the writing end is not inherited; the reading end is the watchdog's)
    os.set_inheritable(r, True)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    with contextlib.suppress(OSError, ValueError):  # (inherited files: a launcher's socket)
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in map(int, os.listdir("/proc/self/fd"))
                    if fd > 2 and fd not in (r, w) and _inheritable(fd)]
    try:
        pid = os.posix_spawn(sys.executable, [
            sys.executable, "-I", "-S", "-c", _WATCH, str(r), str(os.getpid()), repr(timeout),
            repr(WATCHDOG_GRACE), line], os.environ, file_actions=actions)
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    return pid, w


def _inheritable(fd) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:  # (the listing's own descriptor, closed since)
        return False


def _stop_watchdog(pid, w):
    """End ``_start_watchdog``'s child (MPI is up, or its import failed) and reap it."""
    os.close(w)  # (the child sees the end of file and exits)
    deadline = time.monotonic() + 1.0
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # (reaped already: a SIGCHLD set to SIG_IGN)
            return
        if time.monotonic() > deadline:  # (never seen: a child stuck in an at-fork handler)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # (ours and not reaped: the pid is still its)
                os.waitpid(pid, 0)
            return
        time.sleep(0.0002)


def shard(rows: int, rank: int, size: int) -> tuple[int, int]:
    """``[lo, hi)``: the contiguous share of ``rows`` rows that ``rank`` of ``size`` takes.

    Shares differ by at most one row; when ``rows < size`` some ranks get none.
    """
    return rank * rows // size, (rank + 1) * rows // size


def share_weight(reduction: str, rows: int, total: int) -> float:
    """The factor on a rank's loss and gradient over ``rows`` of a batch of ``total`` rows that
    makes the SUM over ranks equal the whole batch's: rows / total for a mean, 1 for a sum
    (0 for a rank with no rows)."""
    if rows == 0:
        return 0.0
    return rows / total if reduction == "mean" else 1.0


def weighted_share(reduction: str, rows_weight: float, total_weight: float, rows: int) -> float:
    """``share_weight`` for sample-weighted rows: a rank's weighted mean over its rows (weight
    sum ``rows_weight``) counts rows_weight / total_weight of the batch's (weight sum
    ``total_weight``); 0 where either is 0; 1 for a sum (0 for a rank with no rows)."""
    if rows == 0:
        return 0.0
    if reduction != "mean":
        return 1.0
    return rows_weight / total_weight if total_weight > 0 else 0.0


def stop_flag(signum: int, size: int) -> int:
    """A rank's entry in the step buffer's stop slot, which the step's all-reduce SUMS over the
    ``size`` ranks: 0 without a signal, 1 for Ctrl-C (SIGINT), size + 1 for SIGTERM, so that
    the sum still says whether any rank got SIGTERM (``stop_signal``)."""
    return 0 if not signum else size + 1 if signum == signal.SIGTERM else 1


def stop_signal(total, size: int) -> int:
    """The signal that stops every rank, from the sum of their ``stop_flag``s: SIGTERM if any
    rank got it (a scheduler's stop: every rank then exits 143), else SIGINT if any rank got
    that, else 0."""
    total = int(round(float(total)))
    return signal.SIGTERM if total > size else signal.SIGINT if total else 0


def _first_line(e: BaseException) -> str:
    """``Type: message`` in one line: the message's first line, and where that only heads an
    MPI error stack ("Other MPI error, error stack:"), the stack's last line, which names the
    failure, without its "function(line):" place."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    head = lines[0]
    if head.endswith("error stack:") and len(lines) > 1:
        last = re.sub(r"^\w+\(\d+\)\s*:\s*", "", lines[-1])
        head = f"{head[:-len('error stack:')].rstrip(' ,')}: {last}"
    return f"{type(e).__name__}: {head}"


def _as_figure(value) -> float:
    """A figure of ``check_same`` as a float64: a number as it is, a string as 48 bits of its
    SHA-1 (exact in a float64)."""
    if isinstance(value, str):
        return float(int.from_bytes(hashlib.sha1(value.encode()).digest()[:6], "little"))
    return float(value)


def _disagreement(figures: dict, table: np.ndarray, close=()) -> str:
    """What the ranks' rows of ``table`` (one column a figure of ``figures``, in its order)
    differ on from rank 0's, one clause a figure ("" where they agree)."""
    parts = []
    for j, (name, value) in enumerate(figures.items()):
        column, ref = table[:, j], table[0, j]
        tol = 1e-6 * np.maximum(abs(ref), np.abs(column)) if name in close else 0.0
        with np.errstate(invalid="ignore"):  # (equal infinities, or NaNs, agree)
            same = (column == ref) | (np.abs(column - ref) <= tol) \
                | (np.isnan(column) & np.isnan(ref))
        off = np.flatnonzero(~same)
        if not off.size:
            continue
        r = int(off[0])
        more = f" (and {off.size - 1} other rank{'s' if off.size > 2 else ''})" \
            if off.size > 1 else ""
        if isinstance(value, str):  # (only this rank's own string is known here)
            parts.append(f"{name} differs on rank {r}{more} from rank 0's")
        else:
            parts.append(f"{name} {ref:.10g} on rank 0, {column[r]:.10g} on rank {r}{more}")
    return "; ".join(parts)


def _resolve_timeout(timeout) -> float | None:
    """Seconds to wait, or None for no limit (0 or infinity ask for that)."""
    if timeout is None:
        text = os.environ.get("GPUNET_COLLECTIVE_TIMEOUT", "").strip()
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError:
            timeout = None
        if timeout is None or not timeout >= 0:  # (NaN, which no deadline is ever past)
            raise GpunetError(f"GPUNET_COLLECTIVE_TIMEOUT must be a number of seconds >= 0, "
                              f"got {text!r}")
    if not timeout >= 0:
        raise GpunetError(f"the collective timeout must be >= 0 seconds, got {timeout!r}")
    return None if timeout == 0 or timeout == float("inf") else float(timeout)


class Communicator:
    """The ranks of one data-parallel job and the collectives training needs.

    Args:
        mpi_comm: an ``mpi4py.MPI.Comm`` (default ``MPI.COMM_WORLD``).
        timeout: seconds a collective may wait for the other ranks before the job is aborted;
            0 waits forever; None (default) takes ``$GPUNET_COLLECTIVE_TIMEOUT``, else 600.

    Attributes: ``rank``, ``size``, ``is_root`` (rank 0), ``local_rank`` and ``local_size``
    (this rank among the processes on its host), ``transport`` ("mpi" or "nccl", fixed by
    ``prepare``) and ``notice`` (why a cupy run fell back to MPI, if it did).
    """

    def __init__(self, mpi_comm=None, *, timeout=None):
        self.MPI = import_mpi(timeout)
        self.comm = mpi_comm if mpi_comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self._nccl = None
        try:  # (one rank's bad $GPUNET_COLLECTIVE_TIMEOUT: the others would wait in the
            self.timeout = _resolve_timeout(timeout)  # collective below for good)
        except GpunetError as e:
            if self.size == 1 or timeout is not None:  # (an argument: the same on every rank)
                raise
            self.abort(f"error: {e}; ending every rank")
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.transport = None    # "mpi" or "nccl" once prepare() has run
        self.notice = None       # why the cupy backend fell back to MPI, if it did
        self._nccl = None
        self._buffers = {}

    def __repr__(self):
        return (f"Communicator(rank={self.rank}, size={self.size}, "
                f"transport={self.transport or 'undecided'})")

    def describe(self) -> str:
        """One line for the log: how many ranks, and how the gradients travel."""
        how = "NCCL" if self.transport == "nccl" else "MPI"
        first = (self.MPI.Get_library_version().strip().splitlines() or ["MPI"])[0]
        library = " ".join(first.replace("Version:", "").split()).split(",")[0]
        line = f"{self.size} rank{'s' if self.size != 1 else ''}"
        if self.size == 1:
            line += " (start it with mpiexec -n N to use more)"
        return f"{line}, gradients all-reduced by {how} ({library})" + \
            (f"; {self.notice}" if self.notice else "")

    # -- devices and transport ----------------------------------------------------------

    def use_local_device(self):
        """Make the current CUDA device the ``local_rank``-th of this host's (round robin), so
        ranks on one host spread over its GPUs. Returns the device id, or None where CuPy or a
        device is missing (the backend then says why when it is asked for)."""
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                return None
            device = self.local_rank % count
            cupy.cuda.Device(device).use()
            return device
        except Exception:
            return None

    def prepare(self, backend) -> str:
        """Fix the transport for ``backend`` (a collective: every rank calls it): NCCL for
        cupy when every rank has its own GPU and NCCL loads, else MPI. Returns the transport."""
        if self.transport is not None:
            return self.transport
        if backend.name != "cupy":
            self.transport = "mpi"
            return self.transport
        ok, why, key = 1, None, 0
        try:
            from cupy.cuda import nccl

            if not getattr(nccl, "available", False):
                raise ImportError("NCCL's library is not installed")
            cupy = backend.xp
            device = cupy.cuda.Device()
            try:
                bus = device.pci_bus_id
            except Exception:
                bus = str(device.id)
            where = f"{self.MPI.Get_processor_name()}|{bus}".encode()
            key = int.from_bytes(hashlib.sha1(where).digest()[:7], "little")
        except Exception as e:
            ok, why = 0, f"NCCL unavailable ({_first_line(e)})"
        keys = self._allgather_int(key)
        if ok and len(set(keys.tolist())) < self.size:
            ok, why = 0, "ranks share a GPU (NCCL needs one per rank)"
        agreed = int(self.allreduce(np.array([ok], dtype=np.int64), op="min")[0])
        if agreed:
            uid = np.zeros(128, dtype=np.int16)  # ncclUniqueId: 128 chars, signed or not
            if self.is_root:
                uid[:] = nccl.get_unique_id()
            self._wait(self.comm.Ibcast(uid, root=0), "the NCCL id broadcast")
            self._nccl = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)
            self.transport = "nccl"
        else:
            self.notice = f"{why or 'another rank cannot use NCCL'}: gradients go through MPI " \
                "in host memory"
            self.transport = "mpi"
        return self.transport

    # -- collectives training uses --------------------------------------------------------

    def broadcast_params(self, model) -> None:
        """Overwrite every rank's parameters with rank 0's (one collective over one buffer)."""
        self.prepare(model.backend)
        buf = self._buffer(model, model.n_params)
        if self.is_root:
            self._flatten(model.params, buf)
        if self.transport == "nccl":
            stream = model.backend.xp.cuda.get_current_stream()
            self._nccl.bcast(buf.data.ptr, buf.size, self._nccl_type(buf), 0, stream.ptr)
            self._wait_stream(stream, "the parameter broadcast")
        else:
            host = model.backend.to_host(buf) if self._staged(model.backend) else buf
            self._wait(self.comm.Ibcast(host, root=0), "the parameter broadcast")
            if host is not buf:
                buf[...] = model.backend.asarray(host)
        if not self.is_root:
            off = 0
            for p in model.params.values():
                p[...] = buf[off:off + p.size].reshape(p.shape)
                off += p.size

    def allreduce_grads(self, model, weight: float, extras=()):
        """Sum ``weight * model.grads`` over the ranks, with ``extras`` riding along.

        All gradients, then the extras, are packed into one flat buffer of the model's dtype
        and reduced by ONE all-reduce; afterwards ``model.grads`` are views of the reduced
        buffer. ``weight == 0`` (a rank with no rows in this batch) contributes zeros whatever
        the grads hold. Returns the reduced extras (an array of the backend, a copy).
        """
        self.prepare(model.backend)
        n = model.n_params
        buf = self._buffer(model, n + len(extras))
        off = 0
        for key, p in model.params.items():
            part = buf[off:off + p.size]
            if weight == 0:
                part[...] = 0
            else:
                model.backend.xp.multiply(model.grads[key].reshape(-1), weight, out=part)
            off += p.size
        reduced = self.allreduce_flat(model.backend, buf, n, 1.0, extras)
        off = 0
        for key, p in model.params.items():
            model.grads[key] = buf[off:off + p.size].reshape(p.shape)
            off += p.size
        return reduced

    def allreduce_flat(self, backend, buf, n, weight, extras=()):
        """``allreduce_grads`` in place on a buffer that already holds every gradient in its
        first ``n`` slots (a static step's ``flat``, whose gradients are views into it): they
        are scaled by ``weight`` (0: zeroed), the extras written after them, and the whole
        buffer summed over the ranks in one collective. Returns the reduced extras (a copy)."""
        self.prepare(backend)
        grads = buf[:n]
        if weight == 0:
            grads[...] = 0
        elif weight != 1:
            backend.xp.multiply(grads, weight, out=grads)
        for i, value in enumerate(extras):
            buf[n + i] = value
        self._allreduce_buffer(backend, buf)
        return buf[n:n + len(extras)].copy()

    def batch_norm_allreduce(self, backend):
        """The ``allreduce`` of ``MLP.synced_batch_norm`` for ``backend``: sums a float64 array
        of the backend over the ranks, in place (through NCCL or MPI, as the gradients)."""
        self.prepare(backend)

        def allreduce(a):
            self._allreduce_buffer(backend, a, "a batch norm all-reduce")
            return a

        return allreduce

    def allreduce(self, values, op: str = "sum") -> np.ndarray:
        """Reduce a small host array (metrics, counts) over the ranks: "sum", "min" or "max"."""
        ops = {"sum": self.MPI.SUM, "min": self.MPI.MIN, "max": self.MPI.MAX}
        a = np.array(values, dtype=np.float64 if np.asarray(values).dtype.kind == "f"
                     else np.int64)
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, a, op=ops[op]), "a metrics all-reduce")
        return a

    def barrier(self) -> None:
        self._wait(self.comm.Ibarrier(), "a barrier")

    def check_same(self, figures: dict, close=()) -> None:
        """ConfigError unless every rank gives rank 0's ``figures`` (name -> a number, or a
        string standing for a setting), in one all-gather: ranks that train on other data or
        settings would run other numbers of steps, their collectives mispaired. Those named in
        ``close`` (checksums of floats, which another host may round otherwise) need only agree
        to 1e-6 relative. The message names what differs and on which ranks; rank 0 raises it
        at once, the others a few seconds later (rank 0's abort normally ends them first: one
        line for the job, not one a rank)."""
        if self.size == 1:
            return
        mine = np.array([_as_figure(v) for v in figures.values()], dtype=np.float64)
        table = np.zeros((self.size, mine.size), dtype=np.float64)
        self._wait(self.comm.Iallgather(mine, table), "the check that the ranks agree")
        differ = _disagreement(figures, table, close)
        if differ:
            if not self.is_root:
                time.sleep(5)
            raise ConfigError(f"the ranks' inputs differ: {differ}: start every rank on the "
                              "same data, checkpoint and settings")

    # -- failure handling ---------------------------------------------------------------

    def abort(self, message: str, code: int = 1):
        """Print ``message`` (one line) and end every rank of the job with ``code``."""
        # (one write: print's text and newline go as two, and the ranks' lines ran together)
        sys.stderr.write(f"gpunet: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        time.sleep(0.5)  # let mpiexec forward that line: the abort tears its output pipes down
        if self._nccl is not None:
            with contextlib.suppress(Exception):
                self._nccl.abort()
        self.comm.Abort(code)
        os._exit(code)  # (MPICH's Abort can return before the launcher kills this process,
        # which would then go on, as if the exception had not been raised, or report it twice)

    @contextlib.contextmanager
    def abort_on_error(self, passthrough=(), describe=None):
        """Turn an exception on this rank into one line and ``MPI_Abort``, so the other ranks
        end too instead of waiting in a collective. Exceptions in ``passthrough`` (those that
        every rank raises together, like a diverged loss that all ranks see) and a clean
        ``SystemExit`` pass; on a single rank everything passes. A Ctrl-C is reported as one
        process reports it: interrupted, status 130. ``describe``: the exception's line, as
        the caller words it (the command line's flags), where it returns one."""
        try:
            yield self
        except BaseException as e:
            if self.size == 1 or isinstance(e, passthrough) or (
                    isinstance(e, SystemExit) and e.code in (0, None)):
                raise
            if isinstance(e, KeyboardInterrupt):
                self.abort("interrupted; ending every rank",
                           128 + int(getattr(e, "signum", signal.SIGINT)))
            if isinstance(e, SystemExit) and isinstance(e.code, int):  # (a second SIGTERM's
                self.abort("interrupted by SIGTERM; ending every rank"  # 143, say)
                           if e.code == 128 + signal.SIGTERM else
                           f"exited with status {e.code}; ending every rank", e.code)
            what = describe(e) if describe is not None else None
            if not what:
                what = str(e).strip().splitlines()
                what = what[0] if isinstance(e, GpunetError) and what else _first_line(e)
            self.abort(f"error: {what}; ending every rank")

    # -- internals ------------------------------------------------------------------------

    def _buffer(self, model, size):
        key = (model.backend.name, model.dtype.name, size)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = model.backend.xp.empty(size, dtype=model.dtype)
        return buf

    @staticmethod
    def _flatten(params, buf):
        off = 0
        for p in params.values():
            buf[off:off + p.size] = p.reshape(-1)
            off += p.size

    def _staged(self, backend) -> bool:
        """Whether MPI must go through host memory (cupy arrays, an MPI without CUDA)."""
        return backend.name != "numpy"

    def _allreduce_buffer(self, backend, buf, what="the gradient all-reduce"):
        """Sum ``buf`` (a float array of ``backend``) over the ranks, in place."""
        if self.transport == "nccl":
            from cupy.cuda import nccl

            stream = backend.xp.cuda.get_current_stream()
            self._nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._nccl_type(buf),
                                 nccl.NCCL_SUM, stream.ptr)
            self._wait_stream(stream, what)
            return
        host = backend.to_host(buf) if self._staged(backend) else buf
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM), what)
        if host is not buf:
            buf[...] = backend.asarray(host)

    @staticmethod
    def _nccl_type(buf):
        from cupy.cuda import nccl

        return {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[buf.dtype.name]

    def _allgather_int(self, value: int) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([value], dtype=np.int64), out),
                   "a setup all-gather")
        return out

    def _deadline(self):
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _timed_out(self, what):
        self.abort(f"waited {self.timeout:g} s for the other ranks in {what} (a rank failed or "
                   "stalled); ending every rank (GPUNET_COLLECTIVE_TIMEOUT or "
                   "--collective-timeout sets the limit)")

    def _wait(self, request, what):
        """Complete an MPI request, polling: spin for the first 0.1 s (steps are short), then
        sleep a millisecond between tests so a long wait leaves the core to others."""
        if request.Test():
            return
        deadline, start = self._deadline(), time.monotonic()
        while not request.Test():
            now = time.monotonic()
            if deadline is not None and now > deadline:
                self._timed_out(what)
            if now - start > 0.1:
                time.sleep(0.001)

    def _wait_stream(self, stream, what):
        """Wait for the work queued on ``stream`` (an NCCL collective), polling a CUDA event
        against the deadline and NCCL's asynchronous error state. This synchronises the host
        with the device once per step, the price of noticing a stalled peer."""
        event = stream.record()
        deadline, start, checked = self._deadline(), time.monotonic(), 0.0
        while not event.done:
            now = time.monotonic()
            if deadline is not None and now > deadline:
                self._timed_out(what)
            if now - checked > 0.1:
                self._nccl.check_async_error()  # raises NcclError if a peer went away
                checked = now
            if now - start > 0.1:
                time.sleep(0.001)
