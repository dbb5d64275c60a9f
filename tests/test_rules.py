"""Every way a rectifier can be called gets the rule; other activations keep their derivative."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xcnn.rules import RectifierRules

CALLS = {
    "nn.ReLU": lambda z: nn.ReLU()(z),
    "nn.ReLU(inplace)": lambda z: nn.ReLU(inplace=True)(z * 1),
    "nn.ReLU6(inplace)": lambda z: nn.ReLU6(inplace=True)(z * 1),
    "F.relu": F.relu,
    "F.relu(inplace)": lambda z: F.relu(z * 1, inplace=True),
    "F.relu6": F.relu6,
    "torch.relu": torch.relu,
    "torch.relu_": lambda z: torch.relu_(z * 1),
    "Tensor.relu": lambda z: z.relu(),
    "Tensor.relu_": lambda z: (z * 1).relu_(),
    "F.hardtanh(0, 6)": lambda z: F.hardtanh(z, 0.0, 6.0),
}
# z = (-1, 2, 7), upstream g = (-1, -1, 1); ReLU6 closes at 7, ReLU does not.
Z, G = [-1.0, 2.0, 7.0], [-1.0, -1.0, 1.0]
EXPECTED = {
    "gradient": {False: [0.0, -1.0, 1.0], True: [0.0, -1.0, 0.0]},
    "deconvnet": {False: [0.0, 0.0, 1.0], True: [0.0, 0.0, 1.0]},
    "guided": {False: [0.0, 0.0, 1.0], True: [0.0, 0.0, 0.0]},
}


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("call", CALLS)
def test_each_call_form_gets_each_rule(call: str, rule: str) -> None:
    z = torch.tensor(Z, requires_grad=True)
    mode = RectifierRules()
    with mode:
        y = CALLS[call](z)
    mode.rule = rule  # set after the forward pass: the backward reads it when it runs
    (g,) = torch.autograd.grad(y, z, torch.tensor(G))
    six = "6" in call
    assert y.tolist() == ([0.0, 2.0, 6.0] if six else [0.0, 2.0, 7.0])
    assert g.tolist() == EXPECTED[rule][six]
    assert mode.rectifiers == 1 and not mode.kept_activations


def test_one_forward_serves_every_rule() -> None:
    z = torch.tensor(Z, requires_grad=True)
    mode = RectifierRules()
    with mode:
        y = torch.relu(z)
    for rule in ("guided", "deconvnet", "gradient"):
        mode.rule = rule
        (g,) = torch.autograd.grad(y, z, torch.tensor(G), retain_graph=True)
        assert g.tolist() == EXPECTED[rule][False]


def test_other_activations_keep_their_derivative_and_are_counted() -> None:
    z = torch.tensor(Z, requires_grad=True)
    mode = RectifierRules()
    mode.rule = "guided"
    with mode:
        y = F.silu(z) + F.hardtanh(z) + torch.sigmoid(z) + F.gelu(z)
    (g,) = torch.autograd.grad(y.sum(), z)
    (expected,) = torch.autograd.grad((F.silu(z) + F.hardtanh(z) + torch.sigmoid(z) + F.gelu(z)).sum(), z)
    torch.testing.assert_close(g, expected)
    assert mode.rectifiers == 0
    assert dict(mode.kept_activations) == {"silu": 1, "hardtanh": 1, "sigmoid": 1, "gelu": 1}


def test_outside_a_graph_it_is_the_plain_op() -> None:
    with torch.no_grad(), RectifierRules():
        assert torch.relu(torch.tensor(Z)).tolist() == [0.0, 2.0, 7.0]
    with pytest.raises(ValueError, match="unknown rule"):
        RectifierRules().rule = "lrp"  # type: ignore[assignment]


def test_one_rule_type_shared_with_the_registry() -> None:
    """The registry (torch-free) and the rectifier rules name the same rules with the same type."""
    from xcnn import registry, rules

    assert rules.Rule is registry.Rule and rules.RULES is registry.RULES
    mode = rules.RectifierRules()
    for rule in registry.RULES:
        mode.rule = rule
        assert mode.rule == rule


@pytest.mark.parametrize("call", CALLS)
def test_true_derivatives_suspends_the_rules_in_the_block_only(call: str) -> None:
    """What the extra-pass methods rely on (sampling.plain_torch): inside true_derivatives a
    rectifier under a live guided rule back-propagates its true derivative and is not counted;
    the rules apply again after the block, also after an error inside it."""
    from xcnn.rules import true_derivatives

    def grad() -> list[float]:
        z = torch.tensor(Z, requires_grad=True)
        (g,) = torch.autograd.grad(CALLS[call](z), z, torch.tensor(G))
        return list(g.tolist())

    six = "6" in call
    with RectifierRules() as mode:
        mode.rule = "guided"
        with true_derivatives():
            with true_derivatives():  # nested blocks
                pass
            assert grad() == EXPECTED["gradient"][six]
        assert mode.rectifiers == 0
        with pytest.raises(RuntimeError, match="boom"), true_derivatives():
            raise RuntimeError("boom")
        assert grad() == EXPECTED["guided"][six]
        assert mode.rectifiers == 1


def test_true_derivatives_leaves_a_callers_other_modes_in_force() -> None:
    from xcnn.rules import true_derivatives

    with torch.device("meta"), RectifierRules(), true_derivatives():
        assert torch.zeros(1).device.type == "meta"
