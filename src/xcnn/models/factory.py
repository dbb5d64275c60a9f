"""``python:package.module:factory``: a user's own network, built by calling ``factory()``."""
from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from xcnn.errors import XcnnError

PREFIX = "python:"


def split(name: str) -> tuple[str, str]:
    """"python:pkg.mod:make" -> ("pkg.mod", "make"); one line if the form is wrong."""
    module, _, func = name[len(PREFIX):].rpartition(":")
    if not module or not func.isidentifier():
        raise XcnnError(f"model {name!r}: write python:package.module:factory, e.g. python:mynets.small:build")
    return module, func


def create(name: str) -> nn.Module:
    module, func = split(name)
    try:
        factory = getattr(importlib.import_module(module), func)
    except ImportError as err:
        raise XcnnError(f"model {name!r}: cannot import {module} ({err}); is it on PYTHONPATH?") from None
    except AttributeError:
        raise XcnnError(f"model {name!r}: {module} has no {func}; name a function that returns an nn.Module") from None
    try:
        model = factory()
    except Exception as err:
        raise XcnnError(f"model {name!r}: {func}() failed ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    if not isinstance(model, nn.Module):
        raise XcnnError(f"model {name!r}: {func}() returned {type(model).__name__}, not a torch nn.Module")
    return model


def read_classes(path: str | Path) -> list[str]:
    """One class name per line (blank lines ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise XcnnError(f"classes file {path}: cannot read it ({err}); give a text file with one name per line") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise XcnnError(f"classes file {path} lists no names; give one class name per line")
    return names
