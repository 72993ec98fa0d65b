"""Which function a checkpoint belongs to: a digest of what the function is made of.

Results journaled for one function must not be handed out for another, so a journal
records its function's identity and a call with a different one is refused before
anything runs. The identity is a digest of:

- a plain function: its module and qualified name; its code object (the bytecode,
  the constants and the names it uses, the argument counts and flags, and the same
  for every code object nested in it: inner functions, lambdas, comprehensions);
  its defaults and keyword-only defaults; the values its closure holds; and, by name,
  the functions of its own module that it calls (so a fixed helper counts as a
  change). Line numbers, file names and local variable names are left out: moving a
  function in its file or renaming a local changes nothing.
- a ``functools.partial``: its function, arguments and keywords;
- a bound method: its function and the type of the object it is bound to;
- a class (called to make each result): its module and name, and its own
  ``__init__`` and ``__new__`` when written in Python;
- a builtin: its module and name, and the object it is bound to;
- any other callable object: its type's module and name, its type's ``__call__``, and
  the values in its ``__dict__`` (an object without one, such as ``operator.itemgetter``
  or an instance of a class with ``__slots__``: the arguments and state its pickling
  gives).

Values (defaults, arguments, closure contents) are compared by their canonical
encodings (``digest``), other objects by what their pickling is made of; a value
that cannot be pickled is not compared. The digest
depends on the bytecode, so a new Python version, which compiles differently, makes
a different identity: ``workpool checkpoint accept FILE`` takes the new one.
"""

from __future__ import annotations

import functools
import types
from typing import Any, NamedTuple

from workpool.byvalue import global_names
from workpool.checkpoint.digest import CanonicalEncoder, blake2b, qualified_name

__all__ = ["FunctionIdentity", "function_identity"]


class FunctionIdentity(NamedTuple):
    """A function as a checkpoint knows it: a readable name and the digest compared."""

    name: str
    digest: str  # 32 hex digits


def describe(fn: Any) -> str:
    """How messages and ``workpool checkpoint info`` name a callable."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({describe(fn.func)})"
    if isinstance(fn, types.MethodType):
        return qualified_name(fn.__func__)
    if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        return qualified_name(fn)
    if hasattr(fn, "__qualname__") or hasattr(fn, "__name__"):
        return qualified_name(fn)
    cls = type(fn)
    return f"{cls.__module__}.{cls.__qualname__} object"


class _IdentityEncoder(CanonicalEncoder):
    """The canonical encoder, taught to encode callables and code by what they do."""

    def encode_object(self, obj: Any) -> None:
        if isinstance(obj, types.FunctionType):
            self._function(obj)
        elif isinstance(obj, types.CodeType):
            self._code(obj)
        elif isinstance(obj, functools.partial):
            self.parts.append(b"P")
            self.encode(obj.func)
            self.encode(obj.args)
            self.encode(obj.keywords)
        elif isinstance(obj, types.MethodType):
            self.parts.append(b"M")
            self.encode(obj.__func__)
            bound_to = obj.__self__
            self.encode_name(
                b"", qualified_name(bound_to if isinstance(bound_to, type) else type(bound_to))
            )
        elif isinstance(obj, types.BuiltinFunctionType):  # builtin functions and methods
            self.encode_name(b"X", qualified_name(obj))
            bound_to = obj.__self__
            if isinstance(bound_to, types.ModuleType) or bound_to is None:
                self.parts.append(b"-")
            else:
                self.encode_name(b"", qualified_name(type(bound_to)))
                # "sep".join and "sep2".join differ; a method of a big object is only
                # compared by the object's type, or the digest could copy gigabytes.
                if type(bound_to) in (str, bytes, int, float):
                    self.encode(bound_to)
        elif isinstance(obj, types.ModuleType):
            self.encode_name(b"m", obj.__name__)
        elif isinstance(obj, type):
            self.encode_name(b"K", qualified_name(obj))
            for special in ("__init__", "__new__"):
                method = vars(obj).get(special)
                if isinstance(method, types.FunctionType):
                    self._function(method)
                else:
                    self.parts.append(b"-")
        elif callable(obj):
            cls = type(obj)
            self.encode_name(b"O", qualified_name(cls))
            call = getattr(cls, "__call__", None)  # noqa: B004 - the type's, not the object's
            if isinstance(call, types.FunctionType):
                self._function(call)
            else:
                self.encode_name(b"", qualified_name(call))
            state = getattr(obj, "__dict__", None)
            if isinstance(state, dict):
                self.encode(dict(state))
            else:  # itemgetter(0) and (1), or objects with __slots__, differ only there
                self.encode_reduced(obj)
        else:  # a value (a default, a closure's content): as any input item is encoded
            self.encode_reduced(obj)

    def _function(self, fn: types.FunctionType) -> None:
        self.encode_name(b"F", f"{fn.__module__}.{fn.__qualname__}")
        self._code(fn.__code__)
        self.encode(fn.__defaults__)
        self.encode(fn.__kwdefaults__)
        cells = fn.__closure__ or ()
        self.parts.append(b"C" + len(cells).to_bytes(4, "little"))
        for cell in cells:
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not filled yet
                self.parts.append(b"-")
            else:
                self.encode(contents)
        # The same module's functions it calls, found by the global names its code uses.
        for name in sorted(global_names(fn.__code__)):
            helper = fn.__globals__.get(name)
            if (
                isinstance(helper, types.FunctionType)
                and helper is not fn
                and helper.__module__ == fn.__module__
            ):
                self.encode_name(b"h", name)
                self.encode(helper)

    def _code(self, code: types.CodeType) -> None:
        self.parts.append(b"B")
        for number in (
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
        ):
            self.encode(number)
        self.encode(code.co_code)
        self.encode(code.co_consts)  # nested code objects come back here, to _code
        self.encode(code.co_names)


def function_identity(fn: Any) -> FunctionIdentity:
    """The identity a checkpoint records for ``fn`` (see the module's docstring)."""
    encoder = _IdentityEncoder()
    encoder.encode(fn)
    hasher = blake2b(digest_size=16, person=b"workpool.func.1")
    for part in encoder.parts:  # one by one: a part may be a view of a large array
        hasher.update(part)
    return FunctionIdentity(describe(fn), hasher.hexdigest())
