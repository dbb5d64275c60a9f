"""The one registry of saliency methods and model-free baselines (no torch here).

Everything that lists, labels, orders, validates or draws methods reads this module: the
engine, ``Maps``, the Captum-style classes, the picture renderer, the run's records, config
validation and the report. A method's compute function is named by a dotted path and imported
only when a map is computed, so the report and the config stay importable without torch.

Adding a method: one ``Method`` entry below, one compute function, its tests
(docs/ARCHITECTURE.md, "Adding a method").
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from xcnn.errors import XcnnError, did_you_mean

Kind = Literal["signed", "heat"]  # signed: B×3×H×W with sign; heat: B×1×H×W in [0, 1]
Rule = Literal["gradient", "deconvnet", "guided"]


@dataclass(frozen=True)
class Method:
    name: str  # registry name: configs, records, Maps, CLI
    label: str  # words in tables and figures
    kind: Kind
    rules: tuple[Rule, ...] = ()  # backward rules of the engine's shared pass that it reads
    needs_layer: bool = False  # reads the Grad-CAM layer's activations (and their gradient)
    extra_passes: bool = False  # costs passes of its own (batched, chunked to a memory budget)
    compute: str = ""  # "module:function", imported lazily by the engine
    reference: str = ""  # the paper, for docs and the report
    baseline: bool = False  # model-free map, scored like a method but never mistaken for one

    @property
    def draw(self) -> str:
        """How a picture shows it: "grey" (channel-summed magnitude) or "heat" (over the photo)."""
        return "heat" if self.kind == "heat" else "grey"

    def function(self) -> Any:
        module, _, attr = self.compute.partition(":")
        return getattr(importlib.import_module(module), attr)


_G: tuple[Rule, ...] = ("gradient",)
_ENTRIES: tuple[Method, ...] = (
    # The thesis's five, in the thesis's order: the default set.
    Method("gradient", "Gradient", "signed", _G, compute="xcnn.methods.gradients:gradient",
           reference="Simonyan et al. 2013"),
    Method("deconvnet", "Deconvnet", "signed", ("deconvnet",), compute="xcnn.methods.gradients:deconvnet",
           reference="Zeiler & Fergus 2014"),
    Method("guided_backprop", "Guided Backprop", "signed", ("guided",),
           compute="xcnn.methods.gradients:guided_backprop", reference="Springenberg et al. 2014"),
    Method("gradcam", "Grad-CAM", "heat", _G, needs_layer=True, compute="xcnn.methods.cams:gradcam",
           reference="Selvaraju et al. 2017"),
    Method("guided_gradcam", "Guided Grad-CAM", "signed", ("gradient", "guided"), needs_layer=True,
           compute="xcnn.methods.cams:guided_gradcam", reference="Selvaraju et al. 2017"),
    # Free from the same forward pass and its gradient-rule backward pass.
    Method("input_x_gradient", "Input × Gradient", "signed", _G, compute="xcnn.methods.gradients:input_x_gradient",
           reference="Shrikumar et al. 2016"),
    Method("gradcam_pp", "Grad-CAM++", "heat", _G, needs_layer=True, compute="xcnn.methods.cams:gradcam_pp",
           reference="Chattopadhay et al. 2018"),
    Method("xgradcam", "XGrad-CAM", "heat", _G, needs_layer=True, compute="xcnn.methods.cams:xgradcam",
           reference="Fu et al. 2020"),
    Method("layercam", "LayerCAM", "heat", _G, needs_layer=True, compute="xcnn.methods.cams:layercam",
           reference="Jiang et al. 2021"),
    Method("hirescam", "HiResCAM", "heat", _G, needs_layer=True, compute="xcnn.methods.cams:hirescam",
           reference="Draelos & Carin 2020"),
    Method("eigencam", "Eigen-CAM", "heat", (), needs_layer=True, compute="xcnn.methods.cams:eigencam",
           reference="Muhammad & Yeasin 2020"),
    # Passes of their own.
    Method("scorecam", "Score-CAM", "heat", (), needs_layer=True, extra_passes=True,
           compute="xcnn.methods.perturbation:scorecam", reference="Wang et al. 2020"),
    Method("integrated_gradients", "Integrated Gradients", "signed", (), extra_passes=True,
           compute="xcnn.methods.sampling:integrated_gradients", reference="Sundararajan et al. 2017"),
    Method("smoothgrad", "SmoothGrad", "signed", (), extra_passes=True,
           compute="xcnn.methods.sampling:smoothgrad", reference="Smilkov et al. 2017"),
)
_BASELINES: tuple[Method, ...] = (
    Method("uniform", "Uniform (baseline)", "heat", baseline=True, compute="xcnn.metrics.baselines:uniform"),
    Method("centre", "Centre (baseline)", "heat", baseline=True, compute="xcnn.metrics.baselines:centre"),
    Method("edges", "Edges (baseline)", "heat", baseline=True, compute="xcnn.metrics.baselines:edges"),
)

REGISTRY: dict[str, Method] = {m.name: m for m in _ENTRIES}
BASELINES: dict[str, Method] = {m.name: m for m in _BASELINES}
ALL_METHODS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_METHODS: tuple[str, ...] = ALL_METHODS[:5]  # the thesis's five
SINGLE_PASS: tuple[str, ...] = tuple(m.name for m in _ENTRIES if not m.extra_passes)
BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


def get(name: str) -> Method:
    """The entry of a method or baseline; a one-line XcnnError with "did you mean" otherwise."""
    entry = REGISTRY.get(name) or BASELINES.get(name)
    if entry is None:
        known = list(REGISTRY) + list(BASELINES)
        hint = did_you_mean(str(name), known) or f"known: {', '.join(known)}"
        raise XcnnError(f"unknown method {name!r}; {hint}")
    return entry


def check(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct known method names, in registry order (so records always sort the same way)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise XcnnError(f"no method given; choose from {', '.join(ALL_METHODS)}")
    for n in names:
        if get(n).baseline:
            raise XcnnError(f"{n!r} is a baseline, not a method; baselines are turned on in [checks]")
    if len(set(names)) != len(names):
        raise XcnnError(f"a method is listed twice: {names}")
    return tuple(m for m in ALL_METHODS if m in names)


def label(name: str) -> str:
    entry = REGISTRY.get(name) or BASELINES.get(name)
    return entry.label if entry else name.replace("_", " ").capitalize()


def order(names: Iterable[str]) -> list[str]:
    """Methods in registry order, then baselines, then anything unknown (sorted)."""
    present = set(names)
    known = [*ALL_METHODS, *BASELINE_NAMES]
    return [n for n in known if n in present] + sorted(present - set(known))


def is_baseline(name: str) -> bool:
    return name in BASELINES


@dataclass(frozen=True)
class Options:
    """Parameters of the methods that have any. Part of a run's identity (they change maps);
    ``memory_mb`` only changes how work is chunked, never a map, so it is not."""

    ig_steps: int = 50  # integrated_gradients: Gauss-Legendre steps, baseline 0
    smoothgrad_samples: int = 25
    smoothgrad_sigma: float = 0.15  # noise std as a fraction of (max x - min x) per image
    scorecam_top_k: int | None = None  # None = every channel (the paper); k = the k of highest mean activation
    seed: int = 0  # smoothgrad noise: sample s of photo key comes from a generator seeded by (seed, key, s)
    memory_mb: int = 4096  # working memory the extra-pass methods may use at once (fits a 24 GB machine)

    def identity(self) -> dict[str, Any]:
        """What changes maps (everything but memory_mb)."""
        return {"ig_steps": self.ig_steps, "smoothgrad_samples": self.smoothgrad_samples,
                "smoothgrad_sigma": self.smoothgrad_sigma, "scorecam_top_k": self.scorecam_top_k, "seed": self.seed}
