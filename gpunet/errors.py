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


def own_parameters(cls, module: str) -> set:
    """The parameters a subclass's own ``__init__`` names (not ``*args`` / ``**kwargs``), for the
    refusals of torch's option names in gpunet's constructors: a user's class that takes such an
    option itself (``weight=``) keeps it, one that only passes options on does not. Empty for a
    class whose ``__init__`` is gpunet's own (defined in ``module``)."""
    import inspect

    init = cls.__init__
    if init.__module__ == module:
        return set()
    try:
        parameters = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.name != "self" and p.kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
