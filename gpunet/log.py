"""gpunet's one-line notices: the backend it chose, fused kernels or a CUDA graph it turned
off. They go to the standard logging module's logger ``"gpunet"`` at WARNING, each once. A
program that leaves logging unconfigured sees them on stderr, as ``gpunet: ...`` lines (logging's
last resort prints the message); one that configures logging gets them through its own
handlers; ``logging.getLogger("gpunet").setLevel(logging.ERROR)`` silences them. Nothing is
written where there is no stderr (pythonw, some IDEs)."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("gpunet")


def notice(message: str) -> None:
    """Say ``message`` (one line) as ``gpunet: message`` on the "gpunet" logger."""
    LOGGER.warning("gpunet: %s", message)


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an open terminal: False for None (no stderr at all), a closed
    stream, or a file-like object without ``isatty`` (a stream that logs its writes)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
