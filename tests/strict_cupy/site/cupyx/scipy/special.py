"""``cupyx.scipy.special``: SciPy's special functions as strict cupy ufuncs (see ``cupy``)."""

import scipy.special as _special

from cupy._functions import strict as _strict


def __getattr__(name):
    f = getattr(_special, name)
    if not callable(f):
        raise AttributeError(f"module 'cupyx.scipy.special' has no attribute {name!r}")
    made = globals()[name] = _strict(name, f)
    return made
