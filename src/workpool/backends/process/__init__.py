"""The process engine; ``engine.py`` opens with how a task travels through it."""

from workpool.backends.process.engine import DEFAULT_START_METHOD, ProcessBackend

__all__ = ["DEFAULT_START_METHOD", "ProcessBackend"]
