"""The report's words and order: display names of methods, models and sizes (from the run's
descriptions, ``describing``; 0.2's built-ins otherwise, never the registry: it imports torch,
and knows only the plugins of this process), the record keys, and the column names tables share.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pandas as pd

from xcnn.runfolder import descriptions
from xcnn.runfolder.descriptions import Described, MetricInfo

KEY = ["id", "class", "CNN", "size", "method"]
REQUIRED = KEY + ["P"]
# A baseline is model-free: one record per (photo, category, size), whatever the CNNs.
BASE_KEY = ["id", "class", "size"]
GROUP_LABELS = {"CNN": "CNN", "size": "Size", "class": "Category"}
TOP_K = 5
VIEWS = {"all": "All records", "top5": f"Target in top {TOP_K}"}
NAN_CAPTION = (
    "Records whose P is NaN (an all-zero map or a failed record) are counted in the column "
    "'NaN (reason)' and left out of every other column."
)
# The work whose experiment the report reproduces, named in full wherever a table or figure
# number of it is given (as README.md names it).
THESIS = ('the thesis "Explainable Convolutional Neural Networks" (master\'s thesis, Brno University of '
          "Technology, 2021)")


def thesis(where: str) -> str:
    """'Table 7.1 of the thesis "…" (…)': a table or figure of the thesis, cited."""
    return f"{where} of {THESIS}"


# Optional per-record measurements, shown per method in the method card when records carry them.
CARD_FIELDS = {
    "deletion_auc": "Deletion AUC (lower is better)",
    "insertion_auc": "Insertion AUC (higher is better)",
    "ms": "ms per map",
}


# --- names --------------------------------------------------------------------------------------

_DESCRIBED: ContextVar[Described | None] = ContextVar("described", default=None)


@contextmanager
def describing(run: Described) -> Iterator[Described]:
    """Report with these descriptions (a run's config.json "registry") inside the block."""
    token = _DESCRIBED.set(run)
    try:
        yield run
    finally:
        _DESCRIBED.reset(token)


def described() -> Described:
    """The descriptions of the run being reported; 0.2's built-ins outside ``describing``."""
    return _DESCRIBED.get() or descriptions.builtin()


def method_label(method: str) -> str:
    return described().label(method)


def is_baseline(method: str) -> bool:
    return described().is_baseline(method)


def order_methods(methods: list[str] | set[str]) -> list[str]:
    """Registry order: methods, then baselines, then unknown names (sorted)."""
    return described().order(methods)


def draw_of(method: str) -> str:
    """"grey" or "heat": how the run pictured the method's maps ("grey" for unknown methods)."""
    return described().method(method).draw


def metric_column(metric: MetricInfo) -> str:
    """The table column of a metric beyond 0.2's: "Mean <label>", ↑ / ↓ as its score direction
    (and its name, should its label repeat a column of 0.2's)."""
    column = f"Mean {metric.label} {metric.arrow}".strip()
    return f"{column} ({metric.name})" if column in _TAKEN else column


def shown_metrics(df: pd.DataFrame) -> list[MetricInfo]:
    """The metrics beyond 0.2's five that some record of ``df`` holds a finite value of."""
    return [m for m in described().plugin_metrics()
            if m.name in df.columns and np.isfinite(df[m.name].to_numpy(dtype=float)).any()]


def metrics_caption(columns: list[str]) -> str:
    """What the shown metric columns are: the metric, its paper, its direction."""
    words = {True: "higher is better", False: "lower is better", None: "a description, neither better nor worse"}
    return " ".join(f"{metric_column(m)}: the mean of the per-map metric {m.name} ("
                    + (f"{m.paper}; " if m.paper else "") + f"{words[m.higher_is_better]}) over the records with "
                    "a finite value."
                    for m in described().plugin_metrics() if metric_column(m) in columns)


_CNN_NAMES = {
    "alexnet": "AlexNet", "googlenet": "GoogLeNet", "inception_v3": "Inception v3",
    "mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3-Large",
    "mobilenet_v3_small": "MobileNetV3-Small", "squeezenet1_0": "SqueezeNet 1.0", "squeezenet1_1": "SqueezeNet 1.1",
    "none": "no CNN",
}
_CNN_FAMILIES = {"resnet": "ResNet-", "vgg": "VGG-", "densenet": "DenseNet-", "resnext": "ResNeXt-",
                 "wide_resnet": "Wide ResNet-", "efficientnet_lite": "EfficientNet-Lite", "efficientnet_b": "EfficientNet-B"}


def cnn_label(name: str) -> str:
    """torchvision-style model names in words (resnet18 -> ResNet-18); unknown names unchanged."""
    if name in _CNN_NAMES:
        return _CNN_NAMES[name]
    match = re.fullmatch(r"([a-z_]+?)(\d+)(_bn)?", name)
    if match and match.group(1) in _CNN_FAMILIES:
        return _CNN_FAMILIES[match.group(1)] + match.group(2) + (" BN" if match.group(3) else "")
    return name


def size_label(size: str) -> str:
    if size == "original":
        return "Original size"
    if size.isdigit():
        return f"{size}×{size} px"
    return f"{size.replace('x', '×')} px"


def _size_key(size: str) -> tuple[int, int, str]:
    if size == "original":
        return (0, 0, size)
    head = size.split("x")[0]
    return (1, int(head), size) if head.isdigit() else (2, 0, size)


def order_sizes(sizes: list[str] | set[str]) -> list[str]:
    return sorted(set(sizes), key=_size_key)


def order_ids(ids: pd.Series) -> list:
    """Distinct photo ids, numbers numerically (ids are ints for COCO, text for other formats)."""
    return sorted(set(ids), key=lambda v: (0, v, "") if isinstance(v, (int, np.integer)) else (1, 0, str(v)))



CHECK_COLUMNS = {
    ("deletion", "auc"): "Deletion AUC (lower is better)",
    ("insertion", "auc"): "Insertion AUC (higher is better)",
    ("randomisation", "spearman"): "Similarity after full randomisation",
    ("input", "spearman"): "Input dependence",
    ("class", "spearman"): "Class dependence",
}


# Columns of the summaries and the card that a plugin metric's column must not repeat.
_TAKEN = frozenset(("Records", "Photos", "Sum of P", "Mean P", "Median P", "95 % CI low", "95 % CI high",
                    "Mean chance", "Mean lift", "Pointing (%)", "RMA", "NaN (reason)", "Picture", "Reference",
                    "Flags", *CARD_FIELDS.values(), *CHECK_COLUMNS.values()))


def table_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """Words instead of internal names, for CSV/Markdown/HTML."""
    out = table.copy()
    out["method"] = out["method"].map(method_label)
    if "size" in out.columns:
        out["size"] = out["size"].map(size_label)
    if "CNN" in out.columns:
        out["CNN"] = out["CNN"].map(cnn_label)
    return out.rename(columns={"method": "Method", **GROUP_LABELS})
