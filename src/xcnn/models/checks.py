"""Checks every loaded model passes before any work: its output is B×classes logits, and the
rectifier rules reach its rectifiers (scripted or compiled code calls them where no Python
hook can see them, so Deconvnet and Guided Backprop would silently equal Gradient)."""
from __future__ import annotations

import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.rules import RectifierRules

PROBE_SIDE = 224


def probe(name: str, model: nn.Module, size: tuple[int, int] | None = None) -> int:
    """One forward pass of two zero images; returns the number of classes the model outputs.

    Two images, not one, so an output that lost or moved the batch axis is caught.
    """
    h, w = size or (PROBE_SIDE, PROBE_SIDE)
    device = next(model.parameters(), torch.zeros(0)).device
    mode = RectifierRules()
    with torch.no_grad(), mode:
        try:
            out = model(torch.zeros(2, 3, h, w, device=device))
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # the model's forward is user code: SystemExit too
            raise XcnnError(f"model {name!r} fails on a 2×3×{h}×{w} input ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); xcnn explains image classifiers") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise XcnnError(f"model {name!r} returns {got} for 2 images; it must return B×classes logits "
                        "(wrap it so forward returns one logits tensor)")
    modules = sum(_is_rectifier(m) for m in model.modules())
    if modules and mode.rectifiers == 0:
        raise XcnnError(f"model {name!r} has {modules} ReLU modules but no rectifier call is visible in its "
                        "forward pass (TorchScript or compiled code?); pass the eager nn.Module")
    return int(out.shape[1])


def _is_rectifier(module: nn.Module) -> bool:
    # A scripted module keeps its class's name as ``original_name``, not its class.
    return isinstance(module, (nn.ReLU, nn.ReLU6)) or getattr(module, "original_name", None) in ("ReLU", "ReLU6")
