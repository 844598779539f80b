"""Plain-Python twins of every Numba kernel, one module per topic (cache, srp, ...).

Each twin has the same name as its kernel and is written to be obviously correct, not fast.
All public names of the submodules are re-exported here: ``from tests.naive import lru_hits``.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", [n for n in vars(_module) if not n.startswith("_")]):
        globals()[_name] = getattr(_module, _name)
