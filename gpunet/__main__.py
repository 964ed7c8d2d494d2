"""``python -m gpunet``: the ``gpunet`` command (gpunet.cli)."""

import sys

from .cli import main

sys.exit(main())
