"""``[[models]]``: each model by name, with its CAM layer, weights and what it overrides of its
own input statistics, class names and layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xcnn.errors import XcnnError
from xcnn.experiment.config._read import Source, known, toml_keys, typed


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` table."""

    name: str
    gradcam_layer: str = "auto"
    weights: str | None = None  # None: the model's ImageNet weights; "random"; or a file path
    mean: tuple[float, ...] | None = None  # None: the model's own input statistics
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None  # the output classes' names (a classes file is read on parsing)
    # how the CAM layer reads as a map (xcnn.layouts): "tokens", "nhwc", "nchw"; None: guessed
    layout: str | None = field(default=None, metadata={"toml": "reshape"})

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of xcnn.models.load this entry sets."""
        return {"mean": self.mean, "std": self.std, "classes": self.classes, "layout": self.layout}

    @classmethod
    def from_toml(cls, m: dict[str, Any], key: str, src: Source) -> ModelSpec:
        """The ``key``-th (``models[i]``) table, its weights file and classes file read from the
        config's folder."""
        known(m, toml_keys(cls), "models", src, shown=key)
        if "name" not in m:
            raise src.fail(f"{key}.name", 'missing; e.g. name = "resnet50"')
        name = typed(m["name"], str, f"{key}.name", src)
        _check_name(name, f"{key}.name", src)
        layer = typed(m.get("gradcam_layer", "auto"), str, f"{key}.gradcam_layer", src)
        return cls(name, layer, _weights(m.get("weights"), key, src), *_extras(m, key, src))


def read_models(value: Any, src: Source) -> tuple[ModelSpec, ...]:
    """Every [[models]] table; at least one, each name once."""
    if value is None:
        raise src.fail("models", 'missing; add at least one [[models]] table with name = "resnet50"')
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise src.fail("models", "expected one or more [[models]] tables")
    specs = [ModelSpec.from_toml(m, f"models[{i}]", src) for i, m in enumerate(value)]
    labels = [(s.name, s.gradcam_layer, s.weights) for s in specs]
    if len(set(s.name for s in specs)) != len(specs):
        raise src.fail("models", f"a model name is listed twice ({labels}); records are keyed by name")
    return tuple(specs)


def _check_name(name: str, key: str, src: Source) -> None:
    from xcnn import models

    try:
        models.check_name(name)
    except XcnnError as err:
        raise src.fail(key, str(err)) from None


def _weights(weights: Any, key: str, src: Source) -> str | None:
    from xcnn.models import check_weights_file

    if weights is None:
        return None
    weights = typed(weights, str, f"{key}.weights", src)
    if weights == "random":
        return "random"
    try:
        check_weights_file(src.base / weights)
    except XcnnError as err:
        raise src.fail(f"{key}.weights", f"{err}, \"random\", or leave it out") from None
    return src.path(weights)


def _extras(m: dict[str, Any], key: str, src: Source) -> tuple[Any, ...]:
    """mean, std, classes (a list, or a file of one name per line, read now so the identity
    holds the names) and reshape of one [[models]] table, each checked by the models' own check."""
    from xcnn.layouts import LAYOUTS, check_layout
    from xcnn.models import input_statistics
    from xcnn.models.factory import read_classes

    stats = []
    for k in ("mean", "std"):
        try:
            stats.append(None if m.get(k) is None else input_statistics(m[k], k))
        except XcnnError as err:
            raise src.fail(f"{key}.{k}", str(err)) from None
    classes = m.get("classes")
    if isinstance(classes, str):
        try:
            classes = tuple(read_classes(src.base / classes))
        except XcnnError as err:
            raise src.fail(f"{key}.classes", str(err)) from None
    elif classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
            raise src.fail(f"{key}.classes", f"expected a list of class names or a file with one per line, got {classes!r}")
        classes = tuple(c.strip() for c in classes)
    reshape = m.get("reshape")
    if reshape is not None:
        try:
            check_layout(reshape)
        except XcnnError:
            raise src.fail(f"{key}.reshape", f"got {reshape!r}; use one of {', '.join(map(repr, LAYOUTS))}") from None
    return (*stats, classes, reshape)
