"""Which optional libraries are installed, and at which versions, without importing them.

Peers are optional (the ``bench`` extra): a framework whose library is missing is
skipped with a note. Finding a module's spec does not import it, so asking here costs
the driver nothing and cannot fail on a broken install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

__all__ = ["OPTIONAL", "installed", "missing", "version"]

# Importable module name -> distribution name on PyPI.
OPTIONAL: dict[str, str] = {
    "joblib": "joblib",
    "mpire": "mpire",
    "pebble": "Pebble",
    "psutil": "psutil",
    "numpy": "numpy",
    "distributed": "distributed",
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported in this interpreter."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported."""
    return [module for module in modules if not installed(module)]


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
