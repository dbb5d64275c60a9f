"""Weights files: checked before loading, read as a state dict whatever checkpoint wraps it, and
loaded with one line saying which keys do not fit."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from xcnn.errors import XcnnError


def check_weights_file(file: Path) -> None:
    """One line if ``file`` cannot be a weights file: missing, a folder, or a name with a NUL byte."""
    if "\0" in str(file):
        raise XcnnError(f"weights file {str(file)!r} has a NUL byte in its name; give a state-dict file")
    if file.is_dir():
        raise XcnnError(f"weights file {file} is a folder; give a state-dict file")
    if not file.exists():
        raise XcnnError(f"weights file {file} does not exist; give a state-dict file")


# Training scripts save {"model": state dict, "optimizer": ..., "epoch": ...} and the like.
_WRAPPERS = ("state_dict", "model_state_dict", "model")
_SAVE_HINT = "save model.state_dict() with torch.save and give that file"


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """A state dict (names -> tensors) from ``file``, unwrapped from the common checkpoint dicts
    and without nn.DataParallel's ``module.`` prefix; one line saying what the file holds if
    it is something else. Only tensors and plain containers are unpickled (weights_only): a
    weights file never runs code."""
    check_weights_file(file)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except OSError as err:
        raise XcnnError(f"cannot read weights file {file} ({err.strerror or err}); check its permissions") from None
    except pickle.UnpicklingError as err:
        # weights_only refuses any class but tensors and containers: say which one it met
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise XcnnError(f"weights file {file} holds {what}, not a state dict; {_SAVE_HINT}") from None
    except Exception as err:  # torch's reader fails in many ways on a file it did not write
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        raise XcnnError(f"weights file {file} is not a file written by torch.save ({detail}); {_SAVE_HINT}") from None
    if isinstance(state, dict) and not _is_state_dict(state):
        state = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not _is_state_dict(state):
        raise XcnnError(f"weights file {file} holds {_describe(state)}, not a state dict (names -> tensors); {_SAVE_HINT}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_state_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "a tensor"
    if isinstance(value, dict):
        if not value:
            return "an empty dict"
        keys = sorted(repr(k)[:40] for k in value)
        return f"a dict with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
    return f"a {type(value).__name__}"


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        # torch's message is one header line and then every key: say which keys, in one line
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
        said = [f"{len(keys)} {what} (first: {keys[0]})" for keys, what in
                ((missing, "missing"), (unexpected, "unexpected"), (shaped, "of another shape")) if keys]
        detail = "; ".join(said) or " ".join(str(err).split())[:200]
        raise XcnnError(f"weights do not fit {name}: {detail}; give a state dict saved from this architecture") from None
