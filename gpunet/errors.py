"""Exception classes. Every error gpunet raises on purpose derives from GpunetError.

The command line turns a GpunetError into one line on stderr and a non-zero exit; the Python
API raises the specific class, carrying the same message.
"""


class GpunetError(Exception):
    """Base class of gpunet's own errors."""


class BackendUnavailableError(GpunetError, RuntimeError):
    """A backend was asked for by name but cannot run here (CuPy missing, no device, driver error)."""


class ConfigError(GpunetError, ValueError):
    """An option or argument is invalid: unknown name, non-positive size, unsupported dtype..."""


class ShapeError(ConfigError):
    """Arrays whose shapes do not fit the model or each other."""


class DataError(GpunetError, ValueError):
    """A dataset could not be read or is unusable as given."""


class CheckpointError(GpunetError, ValueError):
    """A file is not a loadable gpunet checkpoint."""
