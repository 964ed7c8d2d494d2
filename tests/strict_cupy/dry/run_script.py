"""``python -P run_script.py scripts/NAME.py ARGS...``: scripts/gpu-dry's stand-in for running
a script: it loads the script as a module, shrinks its sizes (``dry.shrink_script``) and
returns what its ``main(ARGS)`` (or ``main()``) returns, as ``if __name__ == "__main__"`` would."""

import importlib.util
import inspect
import sys
from pathlib import Path

import dry

path = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location(path.stem, path)
module = importlib.util.module_from_spec(spec)
sys.modules[path.stem] = module
spec.loader.exec_module(module)
dry.shrink_script(path.stem, module)
sys.argv = [str(path), *sys.argv[2:]]
takes_argv = bool(inspect.signature(module.main).parameters)  # (kernel_health's main() does not)
sys.exit(module.main(sys.argv[1:]) if takes_argv else module.main())
