"""``cupyx`` of the strict CuPy stand-in: only ``cupyx.scipy.special`` (see ``cupy``)."""

import cupy  # noqa: F401 (refuses to load outside GPUNET_STRICT_CUPY=1)
