"""What the registries hold: the entries of saliency methods, per-map metrics and model checks,
the rows a check gives, and the keywords each decorator of ``xcnn.registry`` takes (``MethodInfo``,
``MetricInfo``, ``CheckInfo``: the public plugin API, checked by mypy). Torch- and NumPy-free.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from xcnn.registry import Rule

Kind = Literal["signed", "heat"]  # signed: B×3×H×W with sign; heat: B×1×H×W in [0, 1]
Scope = Literal["maps", "photos"]


@dataclass(frozen=True)
class Method:
    """A saliency method (or a model-free baseline) as the registry knows it."""

    name: str  # registry name: configs, records, Maps, CLI
    label: str  # words in tables and figures
    kind: Kind
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda ctx: None)
    rules: tuple[Rule, ...] = ()  # backward rules of the engine's shared pass that it reads
    needs_layer: bool = False  # reads the CAM layer's activations (and their gradient)
    extra_passes: bool = False  # costs passes of its own (batched, chunked to a memory budget)
    params: type | None = None  # frozen dataclass of its parameters, or None
    fields: tuple[str, ...] = ()  # per-image numbers it returns: record fields, e.g. "completeness"
    reference: str = ""  # the paper, for docs and the report
    baseline: bool = False  # model-free map, scored like a method but never mistaken for one
    origin: str = ""  # the module that registered it

    @property
    def draw(self) -> str:
        """How a picture shows it: "grey" (channel-summed magnitude) or "heat" (over the photo)."""
        return "heat" if self.kind == "heat" else "grey"

    @property
    def builtin(self) -> bool:
        return self.origin.startswith("xcnn.")

    def default_params(self) -> Any:
        return None if self.params is None else self.params()

    def function(self) -> Callable[..., Any]:
        return self.fn

    def describe(self) -> dict[str, Any]:
        """What a run folder keeps of it, so the report (torch-free) draws and names it."""
        return {"label": self.label, "kind": self.kind, "draw": self.draw, "reference": self.reference,
                "baseline": self.baseline, "fields": list(self.fields), "origin": self.origin}


@dataclass(frozen=True)
class Metric:
    """A per-map metric: a pure function of maps, masks and a context, B values per call."""

    name: str  # the record field it fills
    label: str
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda m, k, c: None)
    higher_is_better: bool | None = True  # None: neither (a description, not a score)
    category: str = "localisation"  # Quantus's categories: localisation, complexity, ...
    paper: str = ""
    fields: tuple[str, ...] = ()  # record fields it fills besides its name (P also gives E, E_celk)
    boolean: bool = False  # its values are yes/no (1.0 / 0.0, NaN: undefined), kept as true/false/null
    origin: str = ""
    params: type | None = None  # frozen dataclass of its parameters ([metrics.NAME]); read as ctx.params

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "higher_is_better": self.higher_is_better, "category": self.category,
                "paper": self.paper, "fields": list(self.fields), "origin": self.origin}


@dataclass
class MetricContext:
    """What a per-map metric may read besides the maps and masks (all for the same B maps)."""

    method: str  # the method (or baseline) whose maps these are
    photos: Any = None  # B×H×W×3 uint8 RGB at the model's input size, when the caller has them
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields of the metrics run before
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)  # shared work between metrics
    params: Any = None  # the running metric's parameters (its dataclass, the run's values), or None


@dataclass(frozen=True)
class Score:
    """A summary number of a model check, as the report's method card shows it: the mean, per
    method, of the rows with this test and measure (step null, or the last step)."""

    test: str
    measure: str
    label: str  # the card's column
    higher_is_better: bool | None = True  # None: neither (a description, like a similarity)
    last_step: bool = False  # the rows at the highest step (randomisation: every layer re-initialised)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Check:
    """A model check: it runs the model again (on perturbed photos, other classes, randomised
    weights ...) and writes rows to RUN_DIR/checks.jsonl.

    scope "maps": it reads the maps a record batch just computed, on the first
    ``checks.faithfulness_photos`` (photo, category) pairs at ``checks.faithfulness_sizes``
    (deletion / insertion). scope "photos": it gets a batch of its own, the first N photos
    (N: its parameter ``photos``, else 8) at the run's first resized size (randomisation,
    dependence: a check that compares photos with each other)."""

    name: str
    label: str
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda ctx: ())
    category: str = "faithfulness"  # Quantus's categories: faithfulness, robustness, randomisation, ...
    paper: str = ""
    scope: Scope = "maps"
    params: type | None = None  # frozen dataclass; its ``steps`` and ``photos`` fields are special (check_identity)
    scores: tuple[Score, ...] = ()
    origin: str = ""

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "category": self.category, "paper": self.paper, "scope": self.scope,
                "scores": [s.describe() for s in self.scores], "origin": self.origin}


@dataclass(frozen=True)
class CheckRow:
    """One value a check gives: for photo ``photo`` (its index in the check's batch) and method
    ``method``. ``step``: the point of a curve or of a cascade (None: a summary value)."""

    photo: int
    method: str
    test: str
    measure: str
    value: float
    step: int | None = None


# --- the decorators' keywords (``xcnn.method(name, **MethodInfo)`` and the others) -----------------
# A base class holds the required keywords: TypedDict's NotRequired is not seen at run time under
# ``from __future__ import annotations`` on Python 3.11.

class _MethodRequired(TypedDict):
    label: str
    kind: Kind


class MethodInfo(_MethodRequired, total=False):
    """``xcnn.method``'s keywords; see ``Method`` for each one's meaning."""

    rules: Iterable[Rule]
    needs_layer: bool
    extra_passes: bool
    params: type | None
    fields: Iterable[str]
    reference: str
    baseline: bool


class _MetricRequired(TypedDict):
    label: str


class MetricInfo(_MetricRequired, total=False):
    """``xcnn.metric``'s keywords; see ``Metric``."""

    higher_is_better: bool | None
    category: str
    paper: str
    fields: Iterable[str]
    boolean: bool
    params: type | None


class _CheckRequired(TypedDict):
    label: str


class CheckInfo(_CheckRequired, total=False):
    """``xcnn.check``'s keywords; see ``Check``."""

    category: str
    paper: str
    scope: Scope
    params: type | None
    scores: Iterable[Score]
