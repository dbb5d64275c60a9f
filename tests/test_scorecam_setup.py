"""What a fresh Explainer per call costs: the probes run once per model, and change no map."""
from __future__ import annotations

import torch
from torch import nn

import xcnn
from xcnn.engine import find_target_layer
from tests import tiny_net


class _Calls:
    """The rows of each forward call of a model."""

    def __init__(self, model: nn.Module) -> None:
        self.rows: list[int] = []
        self._handle = model.register_forward_pre_hook(lambda m, args: self.rows.append(args[0].shape[0]))

    def close(self) -> None:
        self._handle.remove()


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_a_fresh_explainer_probes_once_per_model() -> None:
    """A fresh Explainer on a model seen before runs no probe, and gets the same layer and bits."""
    torch.manual_seed(0)
    model, x = tiny_net.build().eval(), _images()
    calls = _Calls(model)
    first = xcnn.Explainer(model).explain(x, [0, 1], methods=["scorecam"])
    first_rows, calls.rows = calls.rows, []
    again = xcnn.Explainer(model).explain(x, [0, 1], methods=["scorecam"])
    calls.close()
    # Layer probe (1 row), the engine's forward (2), memory probe (1), Score-CAM's passes; then
    # the same without the probes.
    assert first_rows == [1, 2, 1, *calls.rows[1:]] and calls.rows[0] == 2
    assert first.layer == again.layer == find_target_layer(model, x[:1]) == "3"
    assert torch.equal(first["scorecam"], again["scorecam"])
    named = xcnn.Explainer(model, target_layer="3").explain(x, [0, 1], methods=["scorecam"])
    assert torch.equal(named["scorecam"], again["scorecam"])


def test_an_edited_model_is_probed_again() -> None:
    """Replacing a module changes the automatic layer: the cached one must not be reused."""
    model = tiny_net.build().eval()
    assert xcnn.Explainer(model).explain(_images(1), 0, methods=["gradcam"]).layer == "3"
    model[4] = nn.Sequential(nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(1))
    assert xcnn.Explainer(model).explain(_images(1), 0, methods=["gradcam"]).layer == "4.0"

