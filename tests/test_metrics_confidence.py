"""Average Drop and Increase in Confidence against TorchCAM 0.5's ClassificationMetric."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.metrics import faithfulness as F

torchcam = pytest.importorskip("torchcam")
from torchcam.methods import GradCAM  # noqa: E402
from torchcam.metrics import ClassificationMetric  # noqa: E402


def _net() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_confidence_equals_torchcam_per_image() -> None:
    model = _net()
    x = torch.randn((6, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    targets = [0, 1, 2, 3, 1, 0]
    drop, increase, heat = [], [], []
    with GradCAM(model, target_layer=model[3], input_shape=(3, 32, 32)) as extractor:
        metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        for i, t in enumerate(targets):
            metric.reset()
            metric.update(x[i:i + 1], class_idx=[t])
            drop.append(metric.summary()["avg_drop"])
            increase.append(metric.summary()["conf_increase"])
            # the CAM the metric makes (of the softmax, as logits_fn is applied first), min-max scaled at the
            # feature size (16×16): the heat map xcnn holds; both upsample it
            heat.append(extractor([t], torch.softmax(model(x[i:i + 1]), -1))[0][0].detach())
    maps = torch.stack(heat)[:, None]
    assert maps.shape[2:] == (16, 16)
    ours = F.confidence(model, x, maps, torch.tensor(targets), chunk=3)
    assert torch.allclose(ours["average_drop"], torch.tensor(drop, dtype=torch.float64), atol=1e-6)
    assert torch.equal(ours["increase_in_confidence"], torch.tensor(increase, dtype=torch.float64))
    assert 0 < ours["increase_in_confidence"].sum() < 6 and (ours["average_drop"] > 0).any()  # both cases exercised
    assert torch.equal(F.average_drop(model, x, maps, torch.tensor(targets)), ours["average_drop"])


def test_a_signed_map_multiplies_by_its_energy_over_the_max() -> None:
    model = _net()
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    signed = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    r = signed.square().sum(1, keepdim=True)
    scale = r / r.amax(dim=(2, 3), keepdim=True)
    t = torch.tensor([2, 3])
    with torch.no_grad():
        s = torch.softmax(model(x), 1)[[0, 1], t].double()
        s2 = torch.softmax(model(x * scale), 1)[[0, 1], t].double()
    out = F.confidence(model, x, signed, t)
    assert torch.allclose(out["average_drop"], torch.relu(s - s2) / (s + 1e-7), atol=1e-7)
    assert torch.equal(out["increase_in_confidence"], (s < s2).double())


def test_a_heat_map_outside_0_1_is_refused() -> None:
    with pytest.raises(XcnnError, match=r"\[0, 1\]"):
        F.confidence(_net(), torch.zeros(1, 3, 32, 32), torch.full((1, 1, 32, 32), 2.0), torch.tensor([0]))
