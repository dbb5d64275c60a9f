"""``[data]``: which photos (the dataset, its categories, how many) and which class each
category is explained as (``targets``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xcnn.errors import XcnnError
from xcnn.experiment.config._read import Source, in_range, known, number, seed, toml_keys, typed, whole

NOT_READ = {"toml": None}  # a field no key of its own sets


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` table."""

    categories: tuple[str, ...]
    demo: bool = False
    demo_dir: str | None = field(default=None, metadata=NOT_READ)  # demo = "FOLDER"; None: RUN_DIR/demo-data
    format: str = "coco"  # the dataset's format (xcnn.data.formats); the demo set is COCO
    ann_file: str | None = None
    image_dir: str | None = None
    root: str | None = None  # voc, folder
    split: str | None = None  # voc (None: "val")
    box_dir: str | None = None  # imagenet-boxes
    images_per_category: int | None = 30  # None: every usable photo (images_per_category = "all")
    seed: int = 0
    min_area: float = 0.01
    targets: str = "imagenet"  # "imagenet", "label" or "map" (then target_map)
    # category -> model class names / indices (targets = a CSV file or a [data.targets] table)
    target_map: tuple[tuple[str, tuple[str | int, ...]], ...] = field(default=(), metadata=NOT_READ)

    @classmethod
    def from_toml(cls, data: dict[str, Any], src: Source) -> DataConfig:
        known(data, set(toml_keys(cls)), "data", src)
        kw: dict[str, Any] = {}
        demo = data.get("demo", False)
        if isinstance(demo, str):
            kw["demo"], kw["demo_dir"] = True, src.path(demo)
        elif isinstance(demo, bool):
            kw["demo"] = demo
        else:
            raise src.fail("data.demo", f"expected true/false or a cache folder, got {demo!r}")
        kw.update(_paths(data, kw["demo"], src))
        cats = _category_list(data, src)
        kw.update(_targets(data.get("targets", "imagenet"), src))
        kw["categories"] = _categories(cats, kw, src)
        if data.get("images_per_category") == "all":
            kw["images_per_category"] = None
        elif "images_per_category" in data:
            kw["images_per_category"] = whole(data["images_per_category"], "data.images_per_category", src)
        if "seed" in data:
            kw["seed"] = seed(data["seed"], "data.seed", src)
        if "min_area" in data:
            kw["min_area"] = number(data["min_area"], "data.min_area", src, in_range(data["min_area"], 0, 1, False),
                                    "a fraction in [0, 1)")
        return cls(**kw)


def _category_list(data: dict[str, Any], src: Source) -> list[str]:
    if "categories" not in data:
        raise src.fail("data.categories", 'missing; list COCO category names, e.g. ["traffic light", "dog"]')
    cats: list[str] = typed(data["categories"], list, "data.categories", src)
    if not cats or not all(isinstance(c, str) for c in cats):
        raise src.fail("data.categories", f"expected a non-empty list of names, got {cats!r}")
    if len(set(cats)) != len(cats):
        raise src.fail("data.categories", f"a category is listed twice: {cats!r}")
    return cats


def _categories(cats: list[str], kw: dict[str, Any], src: Source) -> tuple[str, ...]:
    """The categories, each known to the target rule (checked now, before any work)."""
    if kw.get("targets", "imagenet") == "map":
        from xcnn.experiment.targets import map_classes

        for cat in cats:
            try:
                map_classes(kw["target_map"], cat)
            except XcnnError as err:
                raise src.fail("data.categories", str(err)) from None
    elif kw.get("targets", "imagenet") == "imagenet" and kw.get("format", "coco") in ("coco", "voc"):
        _imagenet_categories(cats, src)  # other formats name their own categories: checked on selection
    return tuple(cats)


def _imagenet_categories(cats: list[str], src: Source) -> None:
    from xcnn.data import imagenet_classes

    for cat in cats:
        try:
            imagenet_classes(cat)
        except XcnnError as err:
            raise src.fail("data.categories", f"{cat!r}: {err}; remove it from the list") from None


def _paths(data: dict[str, Any], demo: bool, src: Source) -> dict[str, Any]:
    """[data] format and the keys that format takes (paths resolved from the config's folder);
    a key of another format is refused rather than silently ignored."""
    from xcnn.data.formats import FORMATS, OPTIONAL, PATHS, needs, required

    fmt = typed(data.get("format", "coco"), str, "data.format", src)
    if fmt not in FORMATS:
        raise src.fail("data.format", f"unknown format {fmt!r}; use one of {', '.join(map(repr, FORMATS))}")
    given = [k for k in data if k in PATHS | OPTIONAL]
    if demo:
        if given or fmt != "coco":
            other = given[0] if given else "format"
            raise src.fail("data.demo", f"the demo set is built in; give either demo or a dataset ({other}), not both")
        return {}
    kw: dict[str, Any] = {"format": fmt}
    for key in given:
        if key not in FORMATS[fmt]:
            raise src.fail(f"data.{key}", f'not used by format = "{fmt}", which takes {needs(fmt)}')
    for key in required(fmt):
        if key not in data:
            hint = " or demo = true" if fmt == "coco" else ""
            raise src.fail(f"data.{key}", f'missing; format = "{fmt}" takes {needs(fmt)}{hint}')
    for key in given:
        value = typed(data[key], str, f"data.{key}", src)
        if not value.strip():
            raise src.fail(f"data.{key}", f"is empty; give {FORMATS[fmt][key]}")
        kw[key] = src.path(value) if key in PATHS else value
    return kw


def _targets(value: Any, src: Source) -> dict[str, Any]:
    """[data] targets: "imagenet", "label", a CSV file (category,classes) or an inline table."""
    from xcnn.experiment.targets import parse_map, read_map

    if isinstance(value, dict):
        try:
            return {"targets": "map", "target_map": parse_map(value, "data.targets")}
        except XcnnError as err:
            raise src.fail("data.targets", str(err)) from None
    value = typed(value, str, "data.targets", src)
    if value in ("imagenet", "label"):
        return {"targets": value}
    file = (src.base / value).resolve()
    if not file.is_file():
        raise src.fail("data.targets", f'{value!r} is not "imagenet", "label" nor a CSV file (columns category,classes)')
    try:
        return {"targets": "map", "target_map": read_map(file)}
    except XcnnError as err:
        raise src.fail("data.targets", str(err)) from None
