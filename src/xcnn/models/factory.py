"""``python:package.module:factory``: a user's own network, built by calling ``factory()``.

This imports and runs code named by the config, as ``pip install`` does: a config from someone
else is to be read before it is run (docs/MODELS.md)."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import nn

from xcnn.errors import XcnnError

PREFIX = "python:"

T = TypeVar("T")


def split(name: str) -> tuple[str, str]:
    """"python:pkg.mod:make" -> ("pkg.mod", "make"); one line if the form is wrong."""
    module, _, func = name[len(PREFIX):].rpartition(":")
    if not module or not func.isidentifier():
        raise XcnnError(f"model {name!r}: write python:package.module:factory, e.g. python:mynets.small:build")
    if not all(part.isidentifier() for part in module.split(".")):
        # a path ("../nets", "/x/y") would reach importlib as a relative import and fail there
        raise XcnnError(f"model {name!r}: {module!r} is not a module name; a module name must be a dotted "
                        "Python name (package.module) found on PYTHONPATH, not a path")
    return module, func


def create(name: str) -> nn.Module:
    module, func = split(name)
    try:
        imported = importlib.import_module(module)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as err:
        if err.name and f"{module}.".startswith(f"{err.name}."):
            raise XcnnError(f"model {name!r}: cannot import {module} ({err}); is it on PYTHONPATH?") from None
        raise XcnnError(f"model {name!r}: importing {module} raised {_say(err)}") from None  # a dependency
    except BaseException as err:  # user code may raise anything, SystemExit too
        raise XcnnError(f"model {name!r}: importing {module} raised {_say(err)}") from None
    factory = getattr(imported, func, None)
    if factory is None:
        raise XcnnError(f"model {name!r}: {module} has no {func}; name a function that returns an nn.Module")
    if not callable(factory):
        raise XcnnError(f"model {name!r}: {module}:{func} is {type(factory).__name__}, not a function; "
                        "name a function that returns an nn.Module")
    model = guarded(name, f"{module}:{func}()", factory)
    if not isinstance(model, nn.Module):
        raise XcnnError(f"model {name!r}: {func}() returned {type(model).__name__}, not a torch nn.Module")
    return model


def guarded(name: str, what: str, call: Callable[[], T]) -> T:
    """``call()``, which runs user code: anything it raises, ``SystemExit`` included (else the
    run would end with exit 0 and no records), becomes one line naming the model and ``what``.
    An interrupt stays an interrupt."""
    try:
        return call()
    except (KeyboardInterrupt, XcnnError):
        raise
    except BaseException as err:  # user code may raise anything, SystemExit too
        raise XcnnError(f"model {name!r}: {what} raised {_say(err)}") from None


def _say(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__} ({text})" if text else type(err).__name__


def read_classes(path: str | Path) -> list[str]:
    """One class name per line (blank lines ignored)."""
    if "\0" in str(path):
        raise XcnnError(f"classes file {str(path)!r} has a NUL byte in its name; give a text file with one name per line")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise XcnnError(f"classes file {path}: cannot read it ({err}); give a text file with one name per line") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise XcnnError(f"classes file {path} lists no names; give one class name per line")
    return names
