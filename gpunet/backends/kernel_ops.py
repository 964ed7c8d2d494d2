"""Backend ops routed to the fused kernels of ``gpunet.kernels``.

``KernelOps`` is a mixin placed before ``Backend``: each op it overrides sends arrays that fit
a kernel (float32 or float64, C-contiguous, at least ``kernel_min_size`` elements) to the
kernel module named by ``kernel_module`` (``cpu_ops`` or ``cuda_ops``, same functions), and
anything else to the array-module op of the base class. The math is the same either way; the
kernels only fuse it into one pass.

The kernel module is imported on first use, so ``import gpunet`` never loads numba. If a
kernel cannot be compiled or launched here (a numba/numpy mismatch, a driver problem) the
backend says so once (a notice, gpunet.log) and falls back to the array-module ops for the
rest of the process. ``GPUNET_KERNELS=0`` turns the kernels off from the start.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading

import numpy as np

from ..activations import DEFAULT_SLOPE
from ..log import notice

#: activations with an elementwise kernel (softmax goes through the row-wise kernel)
KERNEL_ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh",
                      "silu")
#: activations whose array-module path costs ten times their kernel or more at any size (erfc,
#: exp and where over temporaries; docs/benchmarks.md): they take the kernel at every size
KERNEL_AT_ANY_SIZE = ("gelu", "gelu_tanh", "silu")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LABELS = (np.dtype(np.int32), np.dtype(np.int64))


class _Choices(threading.local):
    """One thread's op choices on a backend: a static step's threshold (None outside one) and
    the depth of ``evaluating`` contexts."""

    min_size = None
    evaluating = 0


class KernelOps:
    kernel_module: str = ""
    #: module of fused optimiser updates (sgd_update, adam_update), if this backend has one
    optim_module: str = ""
    #: arrays with fewer elements than this use the array-module ops (launch cost > work)
    kernel_min_size: int = 0
    #: the same inside a static step (``static_kernels``), whose launches a CUDA graph replays:
    #: the host cost of a launch is paid once there, and a fused kernel is fewer graph nodes
    #: and fewer passes over memory than the array-module ops at any size.
    #: ``GPUNET_STATIC_KERNEL_MIN_SIZE`` overrides it (to compare the two on a GPU) where it
    #: differs from ``kernel_min_size``; where they agree (numpy: the static step the eager
    #: step's numbers to the bit) the variable is not read.
    static_kernel_min_size: int = 0

    _kernels = None
    _kernels_off = None  # None: not decided yet; else the reason they are off ("" = on)

    @property
    def kernels(self):
        """The kernel module, or None when kernels are off here."""
        if self._kernels_off is None:
            if os.environ.get("GPUNET_KERNELS", "1").strip() == "0":
                self._kernels_off = "GPUNET_KERNELS=0"
            else:
                try:
                    self._kernels = importlib.import_module(
                        f"gpunet.kernels.{self.kernel_module}")
                except Exception as e:  # numba missing or broken against this numpy
                    self._turn_off(e)
                else:
                    self._configure_kernels(self._kernels)
                    self._kernels_off = ""
        return None if self._kernels_off else self._kernels

    def _turn_off(self, e: BaseException) -> None:
        """Use the array-module ops from now on, saying why once (a notice: gpunet.log)."""
        first = (str(e).strip().splitlines() or [""])[0]
        self._kernels_off = f"{type(e).__name__}: {first}"
        notice(f"fused {self.name} kernels unavailable ({self._kernels_off}); using "
               "array-module ops")

    @property
    def optim_kernels(self):
        """The fused optimiser module, or None (none here, or kernels are off)."""
        return self._module(self.optim_module) if self.optim_module else None

    def _module(self, name):
        """``gpunet.kernels.<name>``, or None (kernels off here, or it fails to import)."""
        if self.kernels is None:
            return None
        try:
            return importlib.import_module(f"gpunet.kernels.{name}")
        except Exception as e:
            self._turn_off(e)
            return None

    # The contexts below choose ops for the thread that enters them: threads share a backend
    # (one instance per name), and one thread's static step or predict must not change the
    # ops, and so the rounding, of another's training. Their state is thread-local.

    def _here(self) -> _Choices:
        """This thread's op choices (``_Choices``)."""
        here = self.__dict__.get("_local")
        if here is None:  # (setdefault: atomic, so threads racing here keep one)
            here = self.__dict__.setdefault("_local", _Choices())
        return here

    def _mine(self) -> dict:
        """This thread's ``_Choices`` as its own dict, for a context to restore on exit: a
        generator-based context closed in another thread (a suspended generator collected
        there) must restore the thread that entered it, which the ``_Choices`` object, whose
        attributes are those of the thread reading them, would not."""
        return vars(self._here())

    def min_size(self) -> int:
        """The threshold this thread's ops go by: a static step's inside one, else
        ``kernel_min_size``."""
        limit = self._here().min_size
        return self.kernel_min_size if limit is None else limit

    @contextlib.contextmanager
    def static_kernels(self):
        """Within (in this thread): arrays from ``static_kernel_min_size`` elements up take the
        fused kernels."""
        here = self._mine()
        saved = here.get("min_size")
        limit = self.static_kernel_min_size
        if limit != type(self).kernel_min_size:
            limit = int(os.environ.get("GPUNET_STATIC_KERNEL_MIN_SIZE", limit))
        here["min_size"] = limit
        try:
            yield
        finally:
            here["min_size"] = saved

    #: whether ``evaluating()`` keeps ops off the kernels (numpy: numba's import and compile
    #: would not pay back there; the GPU's kernels are compiled for training anyway)
    evaluate_on_array_ops: bool = False

    @contextlib.contextmanager
    def evaluating(self):
        """Within (in this thread): ``Backend.evaluating``'s ops."""
        here = self._mine()
        here["evaluating"] = here.get("evaluating", 0) + 1
        try:
            yield
        finally:
            here["evaluating"] -= 1

    def _configure_kernels(self, module) -> None:
        """Adjust the kernel module once, on first use (a hook for the subclasses)."""

    def _fit(self, *arrays, any_size=False) -> bool:
        """Whether the arrays go to a kernel: large enough (``any_size``: of any size), one
        float dtype and shape, C order, and the kernels on here (asked last: the first asking
        imports numba)."""
        first = arrays[0]
        if not any_size:  # (ops whose array forms cost 10-100x the kernel: on it anyway)
            here = self.__dict__.get("_local") or self._here()
            if here.evaluating and self.evaluate_on_array_ops:
                return False
            limit = self.kernel_min_size if here.min_size is None else here.min_size
            if first.size < limit:
                return False
        return (first.ndim >= 1 and all(
            self.owns(a) and a.dtype == first.dtype and a.dtype in _FLOATS
            and a.flags.c_contiguous and a.shape == first.shape for a in arrays)
            and self.kernels is not None)

    def _is(self, a, dtype, shape) -> bool:
        return self.owns(a) and a.dtype == dtype and a.shape == shape and a.flags.c_contiguous

    def _run(self, op, *args, module=None):
        """Call kernel ``op``; on a failure that is not an argument error, turn kernels off."""
        try:
            return getattr(module or self.kernels, op)(*args)
        except (TypeError, ValueError):
            raise
        except Exception as e:  # compile or launch failure: say it once, fall back for good
            self._turn_off(e)
            return None

    # -- elementwise --------------------------------------------------------------------

    def act_forward(self, name, z, slope=DEFAULT_SLOPE, out=None):
        if self._fit(z, *(() if out is None else (out,)), any_size=name in KERNEL_AT_ANY_SIZE):
            if name in KERNEL_ACTIVATIONS:
                got = self._run("act_forward", name, z,
                                self.xp.empty_like(z) if out is None else out, slope)
                if got is not None:
                    return got
            elif name == "softmax" and z.ndim == 2 and out is None:
                return self.softmax(z)
        return super().act_forward(name, z, slope, out)

    def bias_act_forward(self, name, z, b, slope=DEFAULT_SLOPE):
        if (name in KERNEL_ACTIVATIONS and name != "identity" and z.ndim == 2
                and self._fit(z, any_size=name in KERNEL_AT_ANY_SIZE)
                and self._is(b, z.dtype, z.shape[1:])):
            got = self._run("bias_act_forward", name, z, b, z, slope)
            if got is not None:
                return got
        return super().bias_act_forward(name, z, b, slope)

    def act_backward(self, name, dy, z, y, slope=DEFAULT_SLOPE, out=None):
        if name in KERNEL_ACTIVATIONS and self._fit(dy, z, y, *(() if out is None else (out,)),
                                                    any_size=name in KERNEL_AT_ANY_SIZE):
            got = self._run("act_backward", name, dy, z, y,
                            self.xp.empty_like(dy) if out is None else out, slope)
            if got is not None:
                return got
        return super().act_backward(name, dy, z, y, slope, out)

    # -- row-wise -----------------------------------------------------------------------

    def _rowwise(self, op, x, out_shape):
        if x.ndim == 2 and x.shape[1] > 0 and self._fit(x):
            return self._run(op, x, self.xp.empty(out_shape, dtype=x.dtype))
        return None

    def logsumexp(self, x):
        out = self._rowwise("logsumexp", x, x.shape[:1])
        return super().logsumexp(x) if out is None else out

    def log_softmax(self, x):
        out = self._rowwise("log_softmax", x, x.shape)
        return super().log_softmax(x) if out is None else out

    def softmax(self, x):
        out = self._rowwise("softmax", x, x.shape)
        return super().softmax(x) if out is None else out

    def softmax_cross_entropy(self, logits, labels, scale, out=None):
        if (logits.ndim == 2 and logits.shape[1] > 0
                and self._fit(logits, *(() if out is None else (out[1],)))
                and (out is None or self._is(out[0], logits.dtype, logits.shape[:1]))
                and self.owns(labels) and labels.dtype in _LABELS
                and labels.flags.c_contiguous):
            xp = self.xp
            loss, dlogits = out if out is not None else (
                xp.empty(logits.shape[0], dtype=logits.dtype), xp.empty_like(logits))
            got = self._run("softmax_cross_entropy", logits, labels, loss, dlogits, scale)
            if got is not None:
                return got
        return super().softmax_cross_entropy(logits, labels, scale, out)

    # -- normalisation ------------------------------------------------------------------

    def _fused_norm(self, op, first, args, out, make_out, module=None):
        """Kernel ``op`` (of the kernel module, or of ``gpunet.kernels.<module>``) on ``args``
        then ``out`` (``make_out()`` where None), where ``first`` (rows, d) fits a kernel;
        None where it does not, or the kernel refuses the layout (the caller then takes the
        array-module ops)."""
        if first.ndim != 2 or not len(first) or not self._fit(first):
            return None
        module = self.kernels if module is None else self._module(module)
        if module is None:
            return None
        try:
            return self._run(op, *args, *(make_out() if out is None else out), module=module)
        except (TypeError, ValueError):
            return None

    def layer_norm_forward(self, z, gamma, beta, eps, out=None):
        xp = self.xp
        got = self._fused_norm("layer_norm_forward", z, (z, gamma, beta, eps), out, lambda: (
            xp.empty_like(z), xp.empty_like(z), xp.empty((len(z), 1), z.dtype)))
        return super().layer_norm_forward(z, gamma, beta, eps, out) if got is None else got

    def layer_norm_backward(self, dn, xhat, rstd, gamma, out=None, scratch=None):
        xp = self.xp
        got = self._fused_norm("layer_norm_backward", dn, (dn, xhat, rstd, gamma), out, lambda: (
            xp.empty_like(dn), xp.empty_like(gamma), xp.empty_like(gamma)))
        return super().layer_norm_backward(dn, xhat, rstd, gamma, out, scratch) if got is None \
            else got

    def batch_norm_forward(self, z, gamma, beta, eps, out=None):
        xp, stat = self.xp, (1, z.shape[-1])
        got = self._fused_norm("batch_norm_forward", z, (z, gamma, beta, eps), out, lambda: (
            xp.empty_like(z), xp.empty_like(z), *(xp.empty(stat, z.dtype) for _ in range(3))))
        return super().batch_norm_forward(z, gamma, beta, eps, out) if got is None else got

    def batch_norm_backward(self, dn, xhat, rstd, gamma, out=None, scratch=None):
        xp = self.xp
        got = self._fused_norm("batch_norm_backward", dn, (dn, xhat, rstd, gamma), out, lambda: (
            xp.empty_like(dn), xp.empty_like(gamma), xp.empty_like(gamma)))
        return super().batch_norm_backward(dn, xhat, rstd, gamma, out, scratch) if got is None \
            else got

    # -- optimiser updates --------------------------------------------------------------

    def sgd_update(self, p, g, buf, hyper, momentum, dampening, nesterov, weight_decay, first):
        if self._fit(p, g, *(() if buf is None else (buf,))) \
                and (module := self.optim_kernels) is not None \
                and self._run("sgd_update", p, g, buf, hyper, momentum, dampening, nesterov,
                              weight_decay, first, module=module) is not None:
            return
        super().sgd_update(p, g, buf, hyper, momentum, dampening, nesterov, weight_decay, first)

    def adam_update(self, p, g, m, v, hyper, beta1, beta2, eps, weight_decay, decoupled):
        if self._fit(p, g, m, v) and (module := self.optim_kernels) is not None \
                and self._run("adam_update", p, g, m, v, hyper, beta1, beta2, eps, weight_decay,
                              decoupled, module=module) is not None:
            return
        super().adam_update(p, g, m, v, hyper, beta1, beta2, eps, weight_decay, decoupled)
