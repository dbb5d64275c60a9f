"""Which of the model's classes a dataset category stands for: the ``[data] targets`` rule.

- ``"imagenet"`` (default): the COCO -> ImageNet-1k table (or a WordNet id's own class); the
  model must be an ImageNet-1k classifier.
- ``"label"``: the category's name is one of the model's class names (case-insensitive; a
  WordNet id also matches where the model's ids are known).
- a map (``[data.targets]`` table or a CSV file ``category,classes``): each category lists the
  model's class names or indices; ``;`` separates several in one CSV cell.

The worker explains the best-scoring class of the category's set, read from the same forward
pass; each record keeps the rule in ``target_rule``.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xcnn.data.classes import class_index
from xcnn.errors import XcnnError, did_you_mean

TargetMap = tuple[tuple[str, tuple[str | int, ...]], ...]


def parse_map(table: dict[str, Any], where: str) -> TargetMap:
    """An inline table ``{category: [names or indices]}`` (one value alone is fine)."""
    out = []
    for cat, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all((isinstance(v, str) and v.strip()) or (isinstance(v, int) and not isinstance(v, bool)
                                                                          and v >= 0) for v in values):
            raise XcnnError(f"{where}.{cat}: expected class names or indices >= 0, e.g. [\"n02085620\", 3], got {value!r}")
        out.append((cat.strip().lower(), tuple(v.strip() if isinstance(v, str) else v for v in values)))
    if not out:
        raise XcnnError(f"{where}: the table maps no category; add lines such as dog = [\"n02085620\", 3]")
    return tuple(out)


def read_map(file: Path) -> TargetMap:
    """A CSV file with columns category,classes; a category's rows add up."""
    try:
        with file.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise XcnnError(f"{file}: cannot read it ({err}); give a CSV file with columns category,classes") from None
    if not rows or not {"category", "classes"} <= set(rows[0]):
        raise XcnnError(f"{file}: expected a header category,classes and one row per category")
    table: dict[str, list[str | int]] = {}
    for row in rows:
        cells = [c.strip() for c in (row["classes"] or "").split(";") if c.strip()]
        if not (row["category"] or "").strip() or not cells:
            raise XcnnError(f"{file}: row {row!r} needs a category and at least one class")
        table.setdefault(row["category"].strip(), []).extend(int(c) if c.isdigit() else c for c in cells)
    return parse_map(dict(table), str(file))


def map_classes(target_map: TargetMap, category: str) -> tuple[str | int, ...]:
    """The classes a map gives ``category``; one line with close names if it has none."""
    table = dict(target_map)
    key = category.strip().lower()
    if key not in table:
        raise XcnnError(f"category {category!r} is not in the targets map{_close(key, list(table))}; "
                        "add it to [data.targets] or the targets file")
    return table[key]


def classes_for(rule: str, target_map: TargetMap, category: str, names: Sequence[str],
                wnids: Sequence[str] | None) -> list[int]:
    """The model's class indices standing for ``category`` under ``rule``."""
    if rule == "imagenet":
        if len(names) != 1000:
            raise XcnnError(f'targets = "imagenet" needs an ImageNet-1k model, this one has {len(names)} classes; '
                            'use targets = "label" or a map')
        from xcnn.data import imagenet_classes

        return imagenet_classes(category)
    if rule == "label":
        return [class_index(category, names, wnids, "its classes")]
    if rule == "map":
        found = []
        for value in map_classes(target_map, category):
            if isinstance(value, int):
                if value >= len(names):
                    raise XcnnError(f"targets map: {category!r} -> class {value} is out of range 0..{len(names) - 1}")
                found.append(value)
            else:
                found.append(class_index(value, names, wnids, f"the classes of {category!r}'s map"))
        return sorted(set(found))
    raise XcnnError(f'unknown targets rule {rule!r}; use "imagenet", "label" or a map')


def check_model(config: Any, lm: Any) -> None:
    """Before any work: every category has a class under the config's rule, and every run size
    is one the model takes."""
    for cat in config.data.categories:
        try:
            classes_for(config.data.targets, config.data.target_map, cat, lm.categories, lm.wnids)
        except XcnnError as err:
            raise XcnnError(f"data.categories: {err}") from None
    if lm.fixed_size is not None:
        for size in config.run.sizes:
            if size.hw != lm.fixed_size:
                h, w = lm.fixed_size
                raise XcnnError(f"run.sizes: {lm.name} takes only {h}×{w} inputs, not {size.label!r}; "
                                f"use sizes = [{h if h == w else repr(f'{h}x{w}')}]")


def _close(key: str, options: Sequence[str]) -> str:
    hint = did_you_mean(key, options, n=4)
    return f"; {hint}" if hint else ""
