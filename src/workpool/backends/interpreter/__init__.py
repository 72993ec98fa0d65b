"""Subinterpreters as workers (Python 3.14+); ``engine.py`` opens with how a chunk travels."""

from workpool.backends.interpreter.engine import InterpreterBackend

__all__ = ["InterpreterBackend"]
