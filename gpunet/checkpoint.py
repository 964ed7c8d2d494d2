"""Checkpoints: one ``.npz`` of plain numeric arrays plus a JSON header, never pickle.

Layout inside the archive:

    header             uint8 array holding UTF-8 JSON: format, version, model config, optimizer
                       name/hyperparameters/steps, epoch, dataset split, metrics history
    param/<name>       model parameters (W1, b1, ...) and a batch norm's running statistics
                       (running_mean<i>, running_var<i>)
    opt/<name>/<slot>  optimizer state (momentum buffers, Adam moments)
    data/mean, data/std  the feature standardisation fitted on the training split
    data/y_mean, data/y_std  the regression targets' standardisation (from format version 2)
    data/classes       the class names (text or numbers) of a classifier's outputs, where the
                       data named its classes (output k is classes[k]); absent: output k is
                       label k
    best/<name>        early stopping's best epoch's weights, while a run is going (``fit``)
    epoch/losses, epoch/correct  the interrupted epoch's per-step figures (``fit``), for an
                       exact resume in the middle of an epoch

Files are loaded with ``allow_pickle=False``, so loading one can never run code. Writes are
atomic: a temporary file in the same folder is written, fsynced and renamed over the target,
so a crash leaves either the old checkpoint or the new one, whole. (A target that is no
regular file, a FIFO or a device, or a descriptor the process holds, ``/dev/stdout``, is
written into in place: ``atomic_write``.)
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import stat
import sys
import tempfile
import time

import numpy as np

from .errors import CheckpointError, ConfigError

FORMAT = "gpunet-checkpoint"
#: 2: regression targets may be standardised (data/y_mean, data/y_std); a gpunet that reads
#: only version 1 would take such a model's outputs for the targets' own units
VERSION = 2


def save_checkpoint(path, model, optimizer=None, *, epoch=0, standardizer=None, extra=None,
                    arrays=None, target_standardizer=None, classes=None):
    """Write ``model`` (and optionally its optimizer and training state) to ``path`` atomically.

    ``extra`` is any JSON-able dict stored in the header (data spec, training state, history);
    ``arrays`` maps further names (like ``best/W1``) to host arrays stored beside the weights.
    ``classes``: the names of a classifier's outputs (numbers or text, never objects).
    """
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config(),
        "epoch": int(epoch),
        "optimizer": None,
        "extra": extra or {},
    }
    arrays = {**(arrays or {}), **{f"param/{k}": v for k, v in model.state_dict().items()}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        header["optimizer"] = {k: sd[k] for k in ("name", "steps", "initial_lr",
                                                  "hyperparameters")}
        for key, slots in sd["state"].items():
            for slot, a in slots.items():
                arrays[f"opt/{key}/{slot}"] = a
    if standardizer is not None:
        arrays["data/mean"] = np.asarray(standardizer.mean)
        arrays["data/std"] = np.asarray(standardizer.std)
    if target_standardizer is not None:
        arrays["data/y_mean"] = np.asarray(target_standardizer.mean)
        arrays["data/y_std"] = np.asarray(target_standardizer.std)
    if classes is not None:
        classes = np.asarray(classes)
        if classes.dtype.kind not in "biufU":
            raise CheckpointError(f"class names must be numbers or text to be saved without "
                                  f"pickle, got dtype {classes.dtype}")
        arrays["data/classes"] = classes
    sizes, where = header["model"]["sizes"], os.fspath(path)
    try:  # what load_checkpoint checks: a file it would refuse is not written
        _check_arrays(arrays, sizes, where)
        if classes is not None:
            _check_classes(classes, sizes[-1], where)
        _standardizer(arrays, "data/mean", "data/std", where, sizes[0], "features")
        _standardizer(arrays, "data/y_mean", "data/y_std", where, sizes[-1], "outputs")
    except CheckpointError as e:
        raise CheckpointError(f"not written, as it could not be loaded: {e}") from None
    try:
        text = json.dumps(header, default=_plain_json)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"not written: extra must hold JSON values (numbers, text, lists, "
                              f"dicts); {e}") from None
    arrays["header"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _plain_json(v):
    """A NumPy scalar in ``extra`` as the Python number it holds (as ``.item()``); TypeError
    for anything else JSON has no value for (an array: its ``tolist()`` is the caller's to
    choose)."""
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON (at {v!r:.60})")


def check_writable(path, flag) -> None:
    """ConfigError now, before any work, if ``path`` can't be written later (``flag``: the
    option that named it, for the message)."""
    how = _written_in_place(path)
    if how is not None:  # (/dev/stdout, a FIFO: written in place, no file made beside it)
        if how[0] == "open" and not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {path}: is not writable")
        return
    # the folders are made as the file is written (atomic_write): a command that fails
    # before then leaves none behind, so here the nearest one that exists must take them
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag} {path}: cannot create folder {folder} ("
                          + ("a file of that name is there" if existing == folder
                             else f"{existing} is a file") + ")")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {path}: " + (f"folder {folder} is not writable"
                                               if existing == folder else
                                               f"cannot create folder {folder} ({existing} "
                                               "is not writable)"))
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a folder, not a file")


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it over
    ``path``. Readers see the old file or the new one, never a part. A symbolic link is
    followed: the file it points to is replaced, and the link stays (errors name ``path``).

    Where ``path`` is a descriptor the process holds (``/dev/stdout``, ``/dev/fd/N``,
    ``/proc/self/fd/N``) or an existing file that is not a regular one (a FIFO, a device),
    ``write`` writes into it in place instead, through a stream it cannot seek: that
    descriptor's own position and flags (``>>`` appends), the device left a device."""
    given = os.fspath(path)
    how = _written_in_place(given)
    if how is not None:
        _write_in_place(given, how, write)
        return
    path = os.path.realpath(given)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    prefix = f".tmp-{os.path.basename(path)}."  # (whose: a killed writer's can be found)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=folder)
    except OSError as e:
        raise _about(e, given) from None
    _remove_stale(folder, prefix, tmp)
    try:
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        _raise_about(e, given, (tmp, path))
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _held_descriptor(path):
    """The number N of the descriptor of this process's that ``path`` names through
    ``/proc/<pid>/fd/N`` (so ``/dev/fd/N``, ``/proc/self/fd/N``, ``/dev/stdout``, and a link
    to one); "other" for another process's descriptor; None for anything else. Each link of
    the chain is looked at, as the last one resolves to the file behind the descriptor."""
    hop = os.path.abspath(path)
    for _ in range(40):  # (the kernel's own limit on a chain of links)
        where = os.path.join(os.path.realpath(os.path.dirname(hop)), os.path.basename(hop))
        m = re.fullmatch(r"/proc/(\d+)(?:/task/\d+)?/fd/(\d+)", where)
        if m:
            return int(m[2]) if int(m[1]) == os.getpid() else "other"
        if not os.path.islink(hop):
            return None
        hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
    return None


def _written_in_place(path):
    """How ``atomic_write`` writes ``path`` where a temporary file renamed over it would not
    do: ("held", N) for a descriptor the process holds, ("open", path) for another
    process's descriptor or an existing file that is not a regular one (nor a folder:
    refused as ever); None where the rename is right."""
    held = _held_descriptor(path)
    if isinstance(held, int):
        return "held", held
    if held == "other":
        return "open", path
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "open", path


class _Stream(io.RawIOBase):
    """A descriptor written in order and never sought: zipfile and np.save then write what
    they would patch afterwards (a zip's member sizes) as they go, which a pipe needs, and a
    file opened to append (``>>``) too, where every write lands at the end."""

    def __init__(self, fd):
        super().__init__()
        self._fd = fd

    def writable(self):
        return True

    def write(self, b):
        return os.write(self._fd, b)

    def close(self):
        if not self.closed:
            os.close(self._fd)
        super().close()


def _write_in_place(given, target, write) -> None:
    """``atomic_write`` into a descriptor, a FIFO or a device: ``target``, as
    ``_written_in_place`` says."""
    how, what = target
    for stream in (sys.stdout, sys.stderr):  # (what print wrote first comes first)
        with contextlib.suppress(Exception):
            stream.flush()
    try:  # (O_APPEND: another process's file behind its descriptor is added to, not cut)
        fd = os.dup(what) if how == "held" else os.open(what, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        raise _about(e, given) from None
    try:
        with io.BufferedWriter(_Stream(fd)) as f:
            write(f)
    except BaseException as e:
        _raise_about(e, given, (what,))


def _raise_about(e, given, paths):
    """Raise ``e``; an error of the file written (a full disk's on write or fsync names no
    file: it is this one's) as one of ``given`` (an OSError without an errno, the caller's
    own, is left as it is)."""
    if isinstance(e, OSError) and e.errno is not None and e.filename in (*paths, None):
        raise _about(e, given) from None
    raise e


#: seconds after which a temporary file of atomic_write's is taken for a killed writer's
STALE_TEMPORARY_S = 3600.0


def _remove_stale(folder, prefix, mine) -> None:
    """Remove the temporary files that writers of the same path killed mid-write (kill -9, a
    preempted job) left in ``folder``, an hour old or more (a write in progress elsewhere is
    younger): each is as large as a checkpoint, and a job preempted again and again would
    pile them up."""
    now = time.time()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".part") \
                        and entry.path != mine:
                    with contextlib.suppress(OSError):
                        if now - entry.stat(follow_symlinks=False).st_mtime > \
                                STALE_TEMPORARY_S:
                            os.unlink(entry.path)
    except OSError:
        pass


def _about(e: OSError, path) -> OSError:
    """``e`` told of ``path``, the file being written, not of the temporary file beside it."""
    return type(e)(e.errno, e.strerror, path)


def _new_file_mode(path) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class Checkpoint:
    """A loaded checkpoint: ``header`` (dict), ``params``, ``optimizer_state``, ``standardizer``
    (the features'), ``target_standardizer`` (regression targets', or None) and ``classes``
    (a classifier's class names, or None: output k is label k)."""

    def __init__(self, header, params, optimizer_state, standardizer, arrays=None,
                 target_standardizer=None, classes=None, path=None):
        self.path = path  # (where it was read from: named in errors)
        self.header = header
        self.params = params
        self.optimizer_state = optimizer_state
        self.standardizer = standardizer
        self.target_standardizer = target_standardizer
        self.classes = classes
        self.arrays = arrays or {}  # every other array, by its full name (e.g. "best/W1")

    def check_sections(self, path=None) -> None:
        """CheckpointError unless the ``extra`` sections that gpunet's runs and estimators
        write (training state, data spec, ...) are of the kinds the commands read
        (``HEADER_KINDS``); ``load_checkpoint`` leaves them to this, as a checkpoint saved
        with ``save_checkpoint(..., extra=...)`` may hold anything there."""
        where = path or self.path or "the checkpoint"
        _raise_malformed(where, _malformed(self.header, core=False))
        _check_features(self.extra.get("features"), where)
        data = self.extra.get("data")
        if data is not None:  # the run's data spec, as load_data would check it
            from .data import DataSpec, _check_spec, source_kind

            try:
                spec = DataSpec.from_json(data)
                try:
                    kind = source_kind(spec.dataset)
                except ConfigError:  # (a make_dataset's name: the Python API's own data)
                    kind = None
                _check_spec(spec, None, kind)
            except ConfigError as e:
                raise CheckpointError(f"{where!r} has a malformed data section ({e})") from None

    def group(self, prefix: str) -> dict:
        """The other arrays under ``prefix/``, by their short names."""
        return {k[len(prefix) + 1:]: v for k, v in self.arrays.items()
                if k.startswith(prefix + "/")}

    @property
    def epoch(self) -> int:
        return self.header["epoch"]

    @property
    def extra(self) -> dict:
        return self.header.get("extra", {})

    @property
    def features(self):
        """The training CSV's feature columns (names, and the categories of text ones), as
        ``gpunet.data.read_features`` takes them; for a saved estimator fitted on a DataFrame,
        its ``feature_names_in_``; None for a source without column names (and for a numeric
        CSV's run saved before gpunet stored their names)."""
        features = self.extra.get("features")
        estimator = self.extra.get("estimator")
        if features is None and isinstance(estimator, dict) \
                and isinstance(estimator.get("feature_names"), list):
            features = [{"name": str(n)} for n in estimator["feature_names"]]
        return features

    def build_model(self, backend=None, weights="param"):
        """A new MLP with this checkpoint's architecture and weights, on ``backend``.

        ``weights="best"`` takes the best-validation snapshot when the run kept one
        (early stopping), else the last weights.
        """
        from .model import MLP

        from .backends import get_backend

        if weights not in ("param", "best"):
            raise ConfigError(f"weights must be 'param' (the last epoch's) or 'best', got "
                              f"{weights!r}")
        cfg = self.header["model"]
        where = repr(self.path) if self.path else "the checkpoint"
        backend = get_backend(backend)  # (an unknown name: the caller's, said as it is)
        try:
            model = MLP.from_config(cfg, backend)
        except (KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{where} has a malformed model section ({e})") from None
        best = self.group("best") if weights == "best" else {}
        try:
            model.load_state_dict(best or self.params)
        except ConfigError as e:  # (ShapeError among them)
            raise CheckpointError(f"{where} holds weights that do not fit its model section "
                                  f"({e})") from None
        return model

    def load_optimizer(self, optimizer) -> None:
        """Restore the optimizer's steps, hyperparameters and state arrays."""
        if self.header.get("optimizer") is None:
            raise CheckpointError("this checkpoint holds no optimizer state")
        try:
            optimizer.load_state_dict({**self.header["optimizer"],
                                       "state": self.optimizer_state})
        except ConfigError as e:  # a value it refuses: the file's (another optimiser: the
            if self.header["optimizer"].get("name") != getattr(optimizer, "name", None):
                raise  # caller's choice, said as it is)
            where = repr(self.path) if self.path else "the checkpoint"
            raise CheckpointError(f"{where} has an optimizer section this optimizer refuses "
                                  f"({e})") from None


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles anything.

    Raises CheckpointError for a missing file, a file that is not a gpunet checkpoint, a
    truncated or corrupted one (among others: a header without its model section or a key of
    it, a standardisation's mean without its std or the reverse), or one of a newer format
    version.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        what = ("holds pickled data; refused to load it" if magic[:1] == b"\x80"
                else "is not a gpunet checkpoint (not an .npz archive)")
        raise CheckpointError(f"{path!r} {what}")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as e:  # truncated zip, bad CRC, garbage bytes, refused object arrays...
        if "allow_pickle" in str(e):
            raise CheckpointError(f"{path!r} holds pickled objects; refused to load it") from None
        why = f"{type(e).__name__}: {e}"
        raise CheckpointError(f"{path!r} is not a readable gpunet checkpoint "
                              f"({why if len(why) <= 200 else why[:197] + '...'})") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except KeyError:
        raise CheckpointError(f"{path!r} is not a gpunet checkpoint (no header)") from None
    except RecursionError:  # (brackets nested past what the JSON reader follows)
        raise CheckpointError(f"{path!r} has a corrupted header (nested too deep to "
                              "read)") from None
    except ValueError as e:  # (bad UTF-8, bad JSON, an integer of more digits than Python
        why = str(e).split("; use sys.")[0]  # converts: its advice is for programmers)
        raise CheckpointError(f"{path!r} has a corrupted header "
                              f"({why if len(why) <= 200 else why[:197] + '...'})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a gpunet checkpoint")
    bad = _not_unicode(header)
    if bad is not None:  # (JSON's \ud800 escape writes what UTF-8 cannot: print fails on it)
        raise CheckpointError(f"{path!r} has a corrupted header (text that is not valid "
                              f"Unicode: {_shown(bad)})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path!r} has a malformed format version ({version!r}; "
                              f"versions are whole numbers from 1)")
    if version > VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format version {version}; this gpunet reads versions "
            f"up to {VERSION}: upgrade gpunet"
        )
    _check_header(header, path)
    params, opt_state, others = {}, {}, {}
    for k, a in arrays.items():
        kind, _, rest = k.partition("/")
        if kind == "param":
            params[rest] = a
        elif kind == "opt":
            key, _, slot = rest.rpartition("/")
            opt_state.setdefault(key, {})[slot] = a
        elif k not in STANDARDISATIONS + ("data/classes",):  # (those have attributes of
            others[k] = a                                     # their own)
    _check_arrays(arrays, header["model"]["sizes"], path)
    classes = arrays.get("data/classes")
    if classes is not None:
        _check_classes(classes, header["model"]["sizes"][-1], path)
    sizes = header["model"]["sizes"]
    standardizer = _standardizer(arrays, "data/mean", "data/std", path, sizes[0], "features")
    target = _standardizer(arrays, "data/y_mean", "data/y_std", path, sizes[-1], "outputs")
    return Checkpoint(header, params, opt_state, standardizer, others, target, classes,
                      path=path)


def _not_unicode(header):
    """The first text in ``header`` (a key or a value) that is not valid Unicode, a lone
    surrogate in it; None where all of it is."""
    todo = [header]
    while todo:  # (a loop, not a recursion: a header may nest as deep as json.loads went)
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v)
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return v
    return None


def _shown(v) -> str:
    """``repr(v)``, at most 40 characters of it."""
    shown = repr(v)
    return shown if len(shown) <= 40 else shown[:37] + "..."


#: gpunet's own arrays: numbers only, and (but for the figures of an interrupted epoch,
#: whose losses may have gone non-finite before the epoch's end would have said so) finite
NUMERIC_PREFIXES = ("param/", "opt/", "best/")
STANDARDISATIONS = ("data/mean", "data/std", "data/y_mean", "data/y_std")
NUMERIC_ARRAYS = STANDARDISATIONS + ("epoch/losses", "epoch/correct")


def _check_members(path) -> None:
    """CheckpointError for an archive whose members would inflate far past the file (gpunet
    writes its arrays uncompressed) or whose .npy headers announce more data than the member
    holds: both checked from the archive's directory and each member's header, before any
    array is read, so that a small file cannot make the reader allocate gigabytes. Also for
    a member that is not a .npy array (NumPy hands those over as bytes, or as an empty
    folder's name), and for a name held twice (NumPy would take the last copy, unsaid)."""
    import zipfile

    from .data import npy_data_bytes

    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        total = sum(i.file_size for i in infos)
        if total > max(64 << 20, 100 * size):
            raise CheckpointError(f"{path!r} would inflate from {size} to {total} bytes; "
                                  "gpunet writes its checkpoints uncompressed: refused")
        counts = collections.Counter(i.filename for i in infos)
        twice = next((n for n, c in counts.items() if c > 1), None)
        if twice is not None:
            raise CheckpointError(f"{path!r} holds {counts[twice]} members named "
                                  f"{twice!r}: which one is meant is unclear; refused")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path!r} has a member {info.filename!r} that is not "
                                      "an array (a checkpoint holds .npy arrays only)")
            with z.open(info) as f:
                if f.read(6) != b"\x93NUMPY":
                    raise CheckpointError(f"{path!r} has a member {info.filename!r} that is "
                                          "not an array (it does not start with a .npy "
                                          "header)")
                f.seek(0)
                need = npy_data_bytes(f)  # (None: np.load says what is wrong with it)
                held = info.file_size - f.tell()  # (after its header)
            if need is not None and need > held:
                raise CheckpointError(f"{path!r} has an array {info.filename[:-4]!r} whose "
                                      f"header announces {need} bytes of data, more than the "
                                      f"{held} it holds")


def _check_arrays(arrays, sizes, path) -> None:
    """CheckpointError unless the layer sizes are positive, each Linear's weight and bias
    are there in the shapes ``sizes`` give (before a model of those sizes is built), and
    gpunet's arrays hold finite real numbers (class names aside)."""
    if any(v < 1 for v in sizes):
        raise CheckpointError(f"{path!r} has a malformed model section: sizes {sizes} (each "
                              "layer needs at least 1 unit)")
    for i in range(1, len(sizes)):
        for name, shape in ((f"param/W{i}", (sizes[i], sizes[i - 1])),
                            (f"param/b{i}", (sizes[i],))):
            if name not in arrays:
                raise CheckpointError(f"{path!r} has no {name}, which its model section "
                                      f"(sizes {sizes}) needs")
            if arrays[name].shape != shape:
                raise CheckpointError(f"{path!r} has {name} of shape {arrays[name].shape}, but "
                                      f"its model section's sizes {sizes} make it {shape}")
    for k, a in arrays.items():
        if not (k.startswith(NUMERIC_PREFIXES) or k in NUMERIC_ARRAYS):
            continue  # (a user's own arrays: anything)
        if a.dtype.kind not in "biuf":
            raise CheckpointError(f"{path!r} has {k} of dtype {a.dtype}, not numbers")
        if a.dtype.kind == "f" and not k.startswith("epoch/") and not np.isfinite(a).all():
            raise CheckpointError(f"{path!r} has {k} holding NaN or infinite values")


def _check_classes(classes, outputs, path) -> None:
    """CheckpointError unless the class names are one per output (or two over a single
    sigmoid output: binary cross-entropy), distinct, and (text) valid Unicode."""
    if classes.ndim != 1:
        raise CheckpointError(f"{path!r} has malformed class names (shape {classes.shape})")
    if classes.dtype.kind not in "biufU":
        raise CheckpointError(f"{path!r} has class names of dtype {classes.dtype}, not numbers "
                              "or text")
    if len(classes) != outputs and not (outputs == 1 and len(classes) == 2):
        raise CheckpointError(f"{path!r} has {len(classes)} class names for a model of "
                              f"{outputs} output(s)")
    if len(np.unique(classes)) != len(classes):
        raise CheckpointError(f"{path!r} has class names that repeat")
    bad = _not_unicode(classes.tolist()) if classes.dtype.kind == "U" else None
    if bad is not None:  # (a lone surrogate, which NumPy's text holds and UTF-8 cannot)
        raise CheckpointError(f"{path!r} has a class name that is not valid Unicode "
                              f"({_shown(bad)})")


#: what every header's model section holds (``MLP.config``); the rest has defaults
MODEL_KEYS = ("sizes", "activation", "output", "dtype")


def _check_header(header, path) -> None:
    """CheckpointError unless the header has an epoch (an integer >= 0) and a model section
    (a dict) with ``MODEL_KEYS``: sizes a list of at least two integers, the others text."""
    epoch = header.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        what = "no epoch" if epoch is None else f"a malformed epoch ({epoch!r})"
        raise CheckpointError(f"{path!r} has {what} in its header")
    cfg = header.get("model")
    if not isinstance(cfg, dict):
        what = "no model section" if cfg is None else f"a malformed model section ({cfg!r})"
        raise CheckpointError(f"{path!r} has {what} in its header")
    missing = [k for k in MODEL_KEYS if k not in cfg]
    if missing:
        raise CheckpointError(f"{path!r} has a model section without "
                              + ", ".join(repr(k) for k in missing))
    sizes = cfg["sizes"]
    bad = [k for k in MODEL_KEYS[1:] if not isinstance(cfg[k], str)]
    if not (isinstance(sizes, list) and len(sizes) >= 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in sizes)):
        bad.insert(0, "sizes")
    if bad:
        raise CheckpointError(f"{path!r} has a malformed model section: "
                              + ", ".join(f"{k} {cfg[k]!r}" for k in bad))
    # the optimiser's section, which gpunet alone writes: each value of the kind it takes
    _raise_malformed(path, _malformed(header, core=True))


#: the kind of each value of a header's sections that the commands read: "int", "count" (an
#: int >= 0 below 2^64), "num", "str", "bool", "list", "dict", "strs" (a list of text), "nums"
#: (of numbers or nulls), "rows" (a list of {name: number}, each with an "epoch" count),
#: "target" (a name or "strs"); "?"
#: also takes null, "!" must be there when its section is
HEADER_KINDS = {
    (): {"extra": "dict", "optimizer": "dict?"},  # (the model's: _check_header)
    ("model",): {"slope": "num", "dropout": "num", "dropout_seed": "count",
                 "dropout_step": "count", "norm": "str?", "norm_eps": "num",
                 "norm_momentum": "num"},
    ("optimizer",): {"name": "str!", "steps": "count!", "hyperparameters": "dict!",
                     "initial_lr": "num"},
    ("optimizer", "hyperparameters"): {"lr": "num!", "weight_decay": "num", "momentum": "num",
                                       "nesterov": "bool", "dampening": "num", "eps": "num",
                                       "clip_norm": "num?", "betas": "list"},
    ("extra",): {"training": "dict?", "data": "dict?", "estimator": "dict?",
                 "dataset": "str?", "task": "str?", "n_classes": "int?", "multilabel": "bool?",
                 "class_weights": "nums?", "fill_values": "nums?", "features": "list?"},
    ("extra", "training"): {"state": "dict!", "batch_size": "count!", "epochs": "count!",
                            "seed": "count!", "patience": "count?", "schedule": "dict?",
                            "rows": "list",
                            "monitor": "str", "min_delta": "num", "ranks": "count",
                            "loss": "dict"},
    ("extra", "training", "state"): {"epoch": "count!", "step": "count!", "rng": "dict?",
                                     "history": "rows!", "best_loss": "num",
                                     "best_epoch": "count", "bad_epochs": "count",
                                     "stopped_early": "bool", "finished": "bool"},
    ("extra", "training", "schedule"): {"name": "str!", "base_lr": "num!", "epochs": "count!",
                                        "step_size": "count!", "gamma": "num!",
                                        "min_lr": "num!", "factor": "num!",
                                        "patience": "count!", "threshold": "num!",
                                        "current": "num!", "best": "num!",
                                        "bad_epochs": "count!", "warmup": "count"},
    ("extra", "training", "loss"): {"name": "str!", "reduction": "str", "delta": "num",
                                    "label_smoothing": "num"},
    ("extra", "data"): {"dataset": "str!", "target": "target?", "x_key": "str?", "y_key": "str?",
                        "data_dir": "str?", "samples": "count", "noise": "num",
                        "task": "str?", "seed": "count!", "val_fraction": "num!",
                        "test_fraction": "num!",
                        "standardize_targets": "bool", "drop_missing": "bool",
                        "fill_missing": "str?", "weight_column": "str?",
                        "class_weight": "str?", "ignore": "strs?"},
    ("extra", "estimator"): {"class": "str!", "params": "dict!", "history": "rows",
                             "feature_names": "strs?", "target_names": "strs?",
                             "best_epoch": "int?", "weights_epoch": "count?",
                             "stopped_early": "bool",
                             "multilabel": "bool", "sparse_labels": "bool", "classes_dtype": "str",
                             "single_target": "bool"},
}


def _kind_ok(v, kind) -> bool:
    if v is None:
        return kind.endswith("?")
    kind = kind.rstrip("?!")
    if kind in ("int", "count", "num") and isinstance(v, bool):
        return False
    if kind == "count":  # an integer >= 0 that uint64 holds (counts meet NumPy's arrays)
        return isinstance(v, int) and 0 <= v < 2**64
    if kind == "target":  # a column's name, or a list of names
        return isinstance(v, str) or _kind_ok(v, "strs")
    if kind == "strs":  # a list of text
        return isinstance(v, list) and all(isinstance(n, str) for n in v)
    if kind == "nums":  # a list of numbers (null: none, as NaN is written)
        return isinstance(v, list) and all(e is None or _kind_ok(e, "num") for e in v)
    if kind == "rows":  # a history: a list of {name: number}, each with its epoch
        return isinstance(v, list) and all(isinstance(r, dict) and all(
            isinstance(k, str) and (e is None or _kind_ok(e, "num")) for k, e in r.items())
            and _kind_ok(r.get("epoch"), "count") for r in v)
    return isinstance(v, {"int": int, "num": (int, float), "str": str, "bool": bool,
                          "list": list, "dict": dict}[kind])


def _raise_malformed(path, problems) -> None:
    if problems:
        raise CheckpointError(f"{path!r} has a malformed header: "
                              + ", ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))


def _malformed(header, core) -> list:
    """What in ``header`` is not of the kind ``HEADER_KINDS`` says (as "section.key" names):
    ``core``, of the header itself and its optimiser section; else, of the ``extra``
    sections that gpunet's runs and estimators write (a user's own ``extra`` need not be
    those). A training run's shuffling state must also be one NumPy's generator takes."""
    problems = []
    for where, kinds in HEADER_KINDS.items():
        if (where[:1] == ("extra",)) == core:
            continue
        section = header
        for k in where:
            section = section.get(k) if isinstance(section, dict) else None
        if not isinstance(section, dict):  # (absent, or reported by its parent's kinds)
            continue
        for k, kind in kinds.items():
            if k not in section:
                if kind.endswith("!"):
                    problems.append(f"{'.'.join(where + (k,))} (missing)")
            elif not _kind_ok(section[k], kind):
                problems.append(f"{'.'.join(where + (k,))} ({_shown(section[k])})")
    if problems or core:
        return problems
    rng = ((header.get("extra") or {}).get("training") or {}).get("state", {}).get("rng")
    if isinstance(rng, dict):
        try:
            np.random.default_rng().bit_generator.state = rng
        except (TypeError, ValueError, KeyError, OverflowError):
            problems.append("extra.training.state.rng (not a generator state)")
    return problems


def _standardizer(arrays, mean, std, path, width, what):
    """The Standardizer stored as the arrays ``mean`` and ``std``; None where neither is
    there, CheckpointError where one is there without the other, their shapes differ, they
    are not one per column of ``width`` (the model's ``what``), or a std is not above 0."""
    from .data import Standardizer

    if mean not in arrays and std not in arrays:
        return None
    missing = [k for k in (mean, std) if k not in arrays]
    if missing:
        have = std if missing[0] == mean else mean
        raise CheckpointError(f"{path!r} has {have} but no {missing[0]}: the standardisation "
                              "is incomplete")
    if arrays[mean].shape != arrays[std].shape:
        raise CheckpointError(f"{path!r} has {mean} of shape {arrays[mean].shape} but {std} of "
                              f"shape {arrays[std].shape}")
    for k in (mean, std):
        if arrays[k].dtype.kind not in "fiu":
            raise CheckpointError(f"{path!r} has {k} of dtype {arrays[k].dtype}, not numbers")
    shape = arrays[mean].shape
    if shape != (width,):
        raise CheckpointError(f"{path!r} has {mean} of shape {shape}, but the model has "
                              f"{width} {what}: ({width},) expected")
    if not (arrays[std] > 0).all():
        raise CheckpointError(f"{path!r} has {std} with values not above 0")
    return Standardizer(arrays[mean], arrays[std])


def _check_features(features, path) -> None:
    """CheckpointError unless ``features`` is None or a list of {"name": str} columns, each
    with an optional "categories" list of str (what ``gpunet.data.read_features`` reads)."""
    if features is None:
        return
    ok = isinstance(features, list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and set(c) <= {"name", "categories"}
        and (isinstance(c.get("categories", []), list)
             and all(isinstance(v, str) for v in c.get("categories", [])))
        for c in features)
    if not ok:
        raise CheckpointError(f"{path!r} has a malformed feature description (features)")
