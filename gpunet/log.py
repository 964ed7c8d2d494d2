"""gpunet's one-line notices: the backend it chose, fused kernels or a CUDA graph it turned
off. They go to the standard logging module's logger ``"gpunet"`` at WARNING, each once. A
program that leaves logging unconfigured sees them on stderr, as ``gpunet: ...`` lines (logging's
last resort prints the message); one that configures logging gets them through its own
handlers; ``logging.getLogger("gpunet").setLevel(logging.ERROR)`` silences them. Nothing is
written where there is no stderr (pythonw, some IDEs).

``$GPUNET_LOG_LEVEL`` (debug, info, warning, error or critical, or a number) sets that level
when gpunet is imported: processes a program starts inherit its environment, not its logging
settings, so ``GPUNET_LOG_LEVEL=error`` silences the notices in joblib's (loky) workers too.
A program's own ``setLevel`` afterwards overrides it."""

from __future__ import annotations

import logging
import os

LOGGER = logging.getLogger("gpunet")

#: the names ``$GPUNET_LOG_LEVEL`` takes (any case), and their levels
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


def _level_from_environment() -> None:
    """Set the "gpunet" logger's level from ``$GPUNET_LOG_LEVEL`` where it is set (a notice
    where it names no level: the notices then go on as by default)."""
    value = os.environ.get("GPUNET_LOG_LEVEL", "").strip()
    if not value:
        return
    level = int(value) if value.isdigit() else LEVELS.get(value.lower())
    if level is None:
        notice(f"GPUNET_LOG_LEVEL={value!r} is not a level ({', '.join(LEVELS)}, or a "
               "number); ignored")
    else:
        LOGGER.setLevel(level)


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


_level_from_environment()
