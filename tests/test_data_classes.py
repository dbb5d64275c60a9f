"""COCO -> ImageNet table: complete, in range, and the hand-checked rows."""
from __future__ import annotations

import pytest

from xcnn.data import imagenet_classes, imagenet_names
from xcnn.data.classes import coco_imagenet_table
from xcnn.errors import XcnnError

# The official 80 COCO categories with their (non-contiguous) ids.
COCO_80 = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}


def test_table_has_the_80_official_categories() -> None:
    table = coco_imagenet_table()
    assert len(COCO_80) == 80
    assert {m.coco_id: m.coco_name for m in table} == COCO_80
    assert len(table) == 80


def test_indices_in_range_unique_and_explained() -> None:
    seen: dict[int, str] = {}
    for m in coco_imagenet_table():
        assert all(0 <= i <= 999 for i in m.imagenet_ids), m.coco_name
        assert len(set(m.imagenet_ids)) == len(m.imagenet_ids), m.coco_name
        assert m.rationale.strip(), m.coco_name
        for i in m.imagenet_ids:  # one ImageNet class never stands for two COCO categories
            assert i not in seen, (i, m.coco_name, seen.get(i))
            seen[i] = m.coco_name


def test_known_rows() -> None:
    assert imagenet_classes("dog") == list(range(151, 269))
    assert imagenet_classes("Cat") == [281, 282, 283, 284, 285]
    assert imagenet_classes("traffic light") == [920]
    assert imagenet_classes("ZEBRA") == [340]
    assert sorted(imagenet_classes("bus")) == [654, 779, 874]
    assert {294, 295, 296, 297} <= set(imagenet_classes("bear"))
    assert {101, 385, 386} == set(imagenet_classes("elephant"))
    bird = set(imagenet_classes("bird"))
    assert {7, 8, 9, 24, 80, 100, 127, 146} <= bird and 21 in bird  # 21 'kite' is the bird
    assert 726 not in imagenet_classes("airplane")  # 'plane' is the carpenter's tool


def test_names_match_the_picks() -> None:
    names = imagenet_names()
    assert len(names) == 1000
    assert names[920] == "traffic light" and names[340] == "zebra"
    assert names[151] == "Chihuahua" and names[268] == "Mexican hairless"
    assert [names[i] for i in imagenet_classes("bus")] == ["minibus", "school bus", "trolleybus"]


def test_no_counterpart_and_unknown_are_clear_errors() -> None:
    for bad in ("person", "kite", "giraffe"):
        with pytest.raises(XcnnError, match="no ImageNet-1k counterpart") as err:
            imagenet_classes(bad)
        assert "\n" not in str(err.value) and "zebra" in str(err.value)
    with pytest.raises(XcnnError, match="not a COCO category"):
        imagenet_classes("unicorn")
