"""The process engine; ``engine.py`` opens with how a task travels through it.

Its names are loaded on first use: the zygote and the workers import this package's
worker-side modules only, and need not pay for the parent's side (``engine.py``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.process.engine import ProcessBackend as ProcessBackend
    from workpool.backends.process.launch import default_start_method as default_start_method

__all__ = ["ProcessBackend", "default_start_method"]

_HOMES = {"ProcessBackend": "engine", "default_start_method": "launch"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"{__name__}.{home}"
    __import__(module)  # not importlib.import_module: importlib is one more import
    return getattr(sys.modules[module], name)
