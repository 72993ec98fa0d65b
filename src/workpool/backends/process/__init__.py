"""The process engine; ``engine.py`` opens with how a task travels through it."""

from workpool.backends.process.engine import ProcessBackend
from workpool.backends.process.launch import default_start_method

__all__ = ["ProcessBackend", "default_start_method"]
