"""``cupy.cuda.nccl`` as CuPy has it where NCCL's library does not load: ``available`` False.

(cupy/cuda/nccl.py sets ``available = False`` when its import of the NCCL bindings fails.)
NCCL itself is not emulated: its communicators join processes, each with a GPU of its own;
gpunet's ranks on the stand-in take its other transport, MPI through host memory.
"""

available = False
