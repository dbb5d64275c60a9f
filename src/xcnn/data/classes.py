"""COCO category -> ImageNet-1k classes (table shipped as coco_imagenet.csv), and the 1000
ImageNet WordNet ids (imagenet_wnids.csv, from timm, Apache-2.0), so a box set labelled by
wnid (ILSVRC2012) names its class directly."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from collections.abc import Sequence

from xcnn.errors import XcnnError, did_you_mean

TABLE = Path(__file__).with_name("coco_imagenet.csv")
WNIDS = Path(__file__).with_name("imagenet_wnids.csv")


@dataclass(frozen=True)
class ClassMapping:
    coco_id: int
    coco_name: str
    imagenet_ids: tuple[int, ...]
    rationale: str


@lru_cache(maxsize=1)
def coco_imagenet_table() -> tuple[ClassMapping, ...]:
    """All 80 COCO categories with their ImageNet-1k class indices (empty: no counterpart)."""
    rows = []
    with TABLE.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ids = tuple(int(i) for i in row["imagenet_ids"].split())
            rows.append(ClassMapping(int(row["coco_id"]), row["coco_name"], ids, row["rationale"]))
    return tuple(rows)


def usable_categories() -> list[str]:
    """COCO categories that have at least one ImageNet-1k counterpart."""
    return [m.coco_name for m in coco_imagenet_table() if m.imagenet_ids]


def imagenet_classes(category: str) -> list[int]:
    """ImageNet-1k class indices standing for a COCO category (matched case-insensitively),
    or the one class of an ImageNet WordNet id such as "n01751748"."""
    key = category.strip().lower()
    wnid = _wnid_index().get(key)
    if wnid is not None:
        return [wnid]
    for m in coco_imagenet_table():
        if m.coco_name == key:
            if not m.imagenet_ids:
                raise XcnnError(
                    f"COCO category {category!r} has no ImageNet-1k counterpart ({m.rationale}); "
                    f"use one of: {', '.join(usable_categories())}"
                )
            return list(m.imagenet_ids)
    raise XcnnError(f"{category!r} is not a COCO category or an ImageNet-1k WordNet id (e.g. n01751748); "
                    f"use one of: {', '.join(usable_categories())}")


@lru_cache(maxsize=1)
def _wnid_rows() -> tuple[dict[str, str], ...]:
    with WNIDS.open(newline="", encoding="utf-8") as f:
        rows = tuple(csv.DictReader(line for line in f if not line.startswith("#")))
    # The file's own index column guards the order every wnid's class rests on.
    if [r["index"] for r in rows] != [str(i) for i in range(1000)]:
        raise XcnnError(f"{WNIDS} does not list the classes 0..999 in order; reinstall xcnn")
    return rows


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids, indexed like the classifiers' outputs."""
    return tuple(r["wnid"] for r in _wnid_rows())


@lru_cache(maxsize=1)
def _wnid_lemmas() -> dict[str, tuple[str, ...]]:
    """Each ImageNet-1k WordNet id's full names ("tabby", "tabby cat"), as the synsets give them."""
    return {r["wnid"]: tuple(n.strip() for n in r["lemmas"].split(",") if n.strip()) for r in _wnid_rows()}


def class_index(name: str, names: Sequence[str], wnids: Sequence[str] | None, where: str) -> int:
    """The one class of a model that ``name`` names: one of its class names, a WordNet id or, for an
    ImageNet class, any of its full names ("tabby cat", "n02123045" and "tabby" are all 281), each
    case-insensitively. ``where`` says in an error what was being read.

    A name shared by several classes (ImageNet has two "crane"s and two "maillot"s) is refused:
    taking the first would explain the wrong class without a word."""
    key = name.strip().casefold()
    found = {i for i, n in enumerate(names) if n.casefold() == key}
    if wnids is not None:
        lemmas = _wnid_lemmas()
        found |= {i for i, w in enumerate(wnids)
                  if w.casefold() == key or any(n.casefold() == key for n in lemmas.get(w, ()))}
    if len(found) == 1:
        return found.pop()
    if found:
        which = ", ".join(f"{i}" + (f" ({wnids[i]})" if wnids is not None else "") for i in sorted(found)[:5])
        which += ", …" if len(found) > 5 else ""
        raise XcnnError(f"{name!r} names several of the model's classes ({where}): {which}; give the index "
                        "or the WordNet id instead")
    options = list(names) + ([n for w in wnids for n in _wnid_lemmas().get(w, ())] if wnids is not None else [])
    hint = did_you_mean(key, options, n=4)
    raise XcnnError(f"{name!r} is not one of the model's class names ({where})" + (f"; {hint}" if hint else ""))


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    # The weights' metadata ships inside torchvision: no download is involved.
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_names() -> list[str]:
    """The 1000 ImageNet-1k class names, indexed like the classifiers' outputs."""
    return list(_names())
