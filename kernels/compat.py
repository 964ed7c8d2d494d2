"""The one place that patches around version quirks of the GPU stack.

numba-cuda 0.30 registers an overload for ``np.row_stack`` when it loads its array
support, which it does the first time it compiles a kernel. numpy 2.5 removed
``row_stack`` (an alias of ``vstack`` since numpy 2.0), so every numba.cuda compile then
fails with ``AttributeError: module 'numpy' has no attribute 'row_stack'``.
"""

from __future__ import annotations

import numpy


def ensure_numpy_compat() -> None:
    """Give numpy back the names numba-cuda still looks up; call before numba.cuda compiles.

    Sets ``numpy.row_stack = numpy.vstack`` when numpy lacks it; a no-op otherwise, and
    cheap enough to call on every kernel build.
    """
    if not hasattr(numpy, "row_stack"):
        numpy.row_stack = numpy.vstack
