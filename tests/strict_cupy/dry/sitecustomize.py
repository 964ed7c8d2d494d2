"""scripts/gpu-dry's start-up hook: every Python process scripts/gpu-check starts under
scripts/gpu-dry imports this first (its folder is on PYTHONPATH there only), and so runs on
the strict CuPy stand-in with the dry run's small sizes (``dry.py``). Anywhere else it does
nothing."""

import os

if os.environ.get("GPUNET_GPU_DRY") == "1" and os.environ.get("GPUNET_STRICT_CUPY") == "1":
    import dry

    dry.activate()
