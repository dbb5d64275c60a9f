"""The Captum-style classes: a class statement per built-in method (seen by IDEs and mypy), and
a class made on first use for a plugin's method."""
from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from xcnn import registry
from xcnn.methods import classes


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()


@pytest.fixture
def own_registry() -> Iterator[None]:
    saved = dict(registry.methods())
    yield
    registry._METHODS.clear()
    registry._METHODS.update(saved)


def test_every_built_in_method_has_its_class_statement() -> None:
    written = {node.name for node in ast.parse(inspect.getsource(classes)).body if isinstance(node, ast.ClassDef)}
    builtins = [m for m in registry.method_names() if registry.get(m).builtin]
    assert len(builtins) >= 19
    for method in builtins:
        name = classes.class_name(method)
        assert name in written, f"{method}: no `class {name}` in xcnn/methods/classes.py"
        cls = vars(classes)[name]  # a module global, not made by the module's __getattr__
        assert cls.method == method and issubclass(cls, classes.Named) and cls in classes.BUILTIN
        assert classes.class_of(method) is cls and classes.CLASSES[method] is cls
    assert len(classes.BUILTIN) == len(builtins)
    assert classes.GradCAMPlusPlus.method == "gradcam_pp" and classes.InputXGradient.method == "input_x_gradient"


def test_a_class_computes_its_method_and_takes_0_2_options() -> None:
    model, x = _tiny(), torch.randn(2, 3, 12, 12)
    maps = classes.Attribution(model, "gradient").attribute(x, target=[1, 2])
    torch.testing.assert_close(classes.Gradient(model).attribute(x, target=[1, 2]), maps)
    from xcnn.methods.registry import Options
    from xcnn.methods.sampling import SmoothGradParams

    with pytest.warns(DeprecationWarning, match="Options is deprecated"):
        old = classes.SmoothGrad(model, options=Options(smoothgrad_samples=2, seed=3)).attribute(x, target=1)
    new = classes.SmoothGrad(model, params=SmoothGradParams(samples=2, seed=3)).attribute(x, target=1)
    torch.testing.assert_close(old, new)
    assert not torch.equal(new, classes.SmoothGrad(model, params=SmoothGradParams(samples=2, seed=4)).attribute(x, 1))


def test_a_plugin_method_gets_its_class_on_first_use(own_registry: None) -> None:
    @registry.method("twice_gradient", label="Twice Gradient", kind="signed", rules=("gradient",))
    def twice(ctx):  # type: ignore[no-untyped-def]
        return 2 * ctx.grads["gradient"]

    cls = classes.CLASSES["twice_gradient"]
    assert cls.__name__ == "TwiceGradient" and classes.TwiceGradient is cls
    assert classes.class_of("twice_gradient") is cls  # made once
    model, x = _tiny(), torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(cls(model).attribute(x, 3), 2 * classes.Gradient(model).attribute(x, 3))
    from xcnn.methods import TwiceGradient  # the package's attribute finds it too

    assert TwiceGradient is cls
    with pytest.raises(AttributeError):
        classes.NoSuchMethodClass  # noqa: B018

