"""Fused kernels behind gpunet's backends.

Two modules with the same functions and signatures:

- ``gpunet.kernels.cuda_ops``: numba.cuda kernels on CUDA arrays (cupy, numba device arrays;
  numpy arrays under ``NUMBA_ENABLE_CUDASIM=1``);
- ``gpunet.kernels.cpu_ops``: ``numba.njit`` twins on numpy arrays.

Importing this package imports neither (nor numba): each kernel is compiled on first use.
"""
