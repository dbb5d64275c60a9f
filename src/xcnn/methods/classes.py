"""One class per registry method, Captum-style, each a thin layer over the engine:

    GuidedBackprop(model).attribute(images, target=281)
    LayerCAM(model, target_layer="layer4").attribute(images, target=281)
    Attribution(model, "layercam").attribute(images, target=281)     # any method by name

Each built-in method has its class statement below, named from the method's label ("Grad-CAM++"
-> ``GradCAMPlusPlus``, "Input × Gradient" -> ``InputXGradient``; a test holds the two in step).
A plugin's method gets its class when first asked (``classes()``, ``CLASSES``, or its name as
an attribute of this module), made from its registry entry. Each call runs only the passes its
method needs. To get several maps of the same images, use ``Explainer.explain``: it shares the
forward pass between them.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xcnn.engine import DEFAULT_MEMORY_MB, Explainer, Targets
from xcnn.methods import registry
from xcnn.methods.registry import Options


class Attribution:
    """The map of one registry method. ``target_layer`` is read only by methods that need a layer
    (the CAMs); ``params`` are the method's parameters (its dataclass; default its defaults),
    ``memory_mb`` what its extra passes may use; ``options`` is xcnn 0.2's (deprecated)."""

    method: str = ""

    def __init__(self, model: nn.Module, method: str, target_layer: str | None = "auto",
                 *, params: Any = None, memory_mb: int = DEFAULT_MEMORY_MB, options: Options | None = None) -> None:
        (self.method,) = registry.check([method])
        self.params, self.memory_mb, self.options = params, memory_mb, options
        needs_layer = registry.get(self.method).needs_layer
        self.explainer = Explainer(model, target_layer=target_layer if needs_layer else None)

    def attribute(self, inputs: torch.Tensor, target: Targets = None, *,
                  keys: Sequence[str] | None = None) -> torch.Tensor:
        """B×3×H×W (signed methods) or B×1×H×W in [0, 1] (heat methods) for B×3×H×W ``inputs``."""
        params = self.options if self.options is not None else (
            None if self.params is None else {self.method: self.params})
        maps = self.explainer.explain(inputs, target, methods=[self.method], params=params, memory_mb=self.memory_mb,
                                      keys=keys)
        return maps.get(self.method)


class Named(Attribution):
    """Base of the per-method classes: the method is fixed by the class."""

    def __init__(self, model: nn.Module, target_layer: str | None = "auto", *, params: Any = None,
                 memory_mb: int = DEFAULT_MEMORY_MB, options: Options | None = None) -> None:
        super().__init__(model, type(self).method, target_layer, params=params, memory_mb=memory_mb, options=options)


class Gradient(Named):
    """Gradient (Simonyan et al. 2013): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "gradient"


class Deconvnet(Named):
    """Deconvnet (Zeiler & Fergus 2014): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "deconvnet"


class GuidedBackprop(Named):
    """Guided Backprop (Springenberg et al. 2014): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "guided_backprop"


class GradCAM(Named):
    """Grad-CAM (Selvaraju et al. 2017): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "gradcam"


class GuidedGradCAM(Named):
    """Guided Grad-CAM (Selvaraju et al. 2017): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "guided_gradcam"


class InputXGradient(Named):
    """Input × Gradient (Shrikumar et al. 2016): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "input_x_gradient"


class GradCAMPlusPlus(Named):
    """Grad-CAM++ (Chattopadhay et al. 2018): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "gradcam_pp"


class XGradCAM(Named):
    """XGrad-CAM (Fu et al. 2020): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "xgradcam"


class LayerCAM(Named):
    """LayerCAM (Jiang et al. 2021): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "layercam"


class HiResCAM(Named):
    """HiResCAM (Draelos & Carin 2020): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "hirescam"


class EigenCAM(Named):
    """Eigen-CAM (Muhammad & Yeasin 2020): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "eigencam"


class ScoreCAM(Named):
    """Score-CAM (Wang et al. 2020): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "scorecam"


class IntegratedGradients(Named):
    """Integrated Gradients (Sundararajan et al. 2017): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "integrated_gradients"


class SmoothGrad(Named):
    """SmoothGrad (Smilkov et al. 2017): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "smoothgrad"


class AblationCAM(Named):
    """Ablation-CAM (Desai & Ramaswamy 2020): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "ablationcam"


class LRPEpsilonPlusFlat(Named):
    """LRP EpsilonPlusFlat (Bach et al. 2015; Kohlbrenner et al. 2020): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "lrp_epsilon_plus_flat"


class LRPEpsilonGammaBox(Named):
    """LRP EpsilonGammaBox (Bach et al. 2015; Kohlbrenner et al. 2020): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "lrp_epsilon_gamma_box"


class Occlusion(Named):
    """Occlusion (Zeiler & Fergus 2014): ``attribute(x, target)`` -> B×3×H×W, signed."""

    method = "occlusion"


class RISE(Named):
    """RISE (Petsiuk et al. 2018): ``attribute(x, target)`` -> B×1×H×W in [0, 1]."""

    method = "rise"


BUILTIN: tuple[type[Named], ...] = (
    Gradient, Deconvnet, GuidedBackprop, GradCAM, GuidedGradCAM, InputXGradient, GradCAMPlusPlus, XGradCAM,
    LayerCAM, HiResCAM, EigenCAM, ScoreCAM, IntegratedGradients, SmoothGrad, AblationCAM, LRPEpsilonPlusFlat,
    LRPEpsilonGammaBox, Occlusion, RISE,
)
_BY_METHOD: dict[str, type[Named]] = {cls.method: cls for cls in BUILTIN}
_PLUGINS: dict[str, tuple[registry.Method, type[Named]]] = {}  # by method: the entry its class was made from


def class_name(method: str) -> str:
    """The CamelCase class name of a registry method, from its label."""
    label = registry.get(method).label.replace("++", "PlusPlus").replace("×", "X")
    return re.sub(r"[^0-9A-Za-z]", "", label)


def class_of(method: str) -> type[Named]:
    """The class of a registry method: its class statement above, or for a plugin's method one
    made from its registry entry on first use."""
    (method,) = registry.check([method])
    if method in _BY_METHOD:
        return _BY_METHOD[method]
    entry = registry.get(method)
    made = _PLUGINS.get(method)
    if made is None or made[0] is not entry:  # a plugin registered again (tests do) gets a new class
        shape = "B×1×H×W in [0, 1]" if entry.kind == "heat" else "B×3×H×W, signed"
        doc = f"{entry.label} ({entry.reference}): ``attribute(x, target)`` -> {shape}."
        made = entry, type(class_name(method), (Named,), {"method": method, "__doc__": doc, "__module__": __name__})
        _PLUGINS[method] = made
    return made[1]


def classes() -> dict[str, type[Named]]:
    """Every registered method's class, plugins' included, in registry order."""
    found = {m: class_of(m) for m in registry.ALL_METHODS}
    if len({cls.__name__ for cls in found.values()}) != len(found):
        raise RuntimeError("two registry labels give the same class name; make the labels distinct")
    return found


def __getattr__(name: str) -> Any:
    # CLASSES (xcnn 0.2's dict) and a plugin's class by name, asked after its plugin loaded.
    if name == "CLASSES":
        return classes()
    if not name.startswith("_"):
        for cls in classes().values():
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BUILTIN", "Attribution", "Named", "class_name", "class_of", "classes", *(cls.__name__ for cls in BUILTIN)]
