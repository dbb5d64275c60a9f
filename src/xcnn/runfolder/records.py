"""What one unit of a run gives: its records (``Record``), check rows and pictures (``UnitResult``).

The record schema lives here: ``Record``'s fields, and ``RECORD_TABLE``, the one-line meaning of
each field that docs/ARCHITECTURE.md's records table repeats (tests/test_records.py holds the
two together). On disk a record is the JSON object ``Record.to_json`` gives, with the keys in the
order xcnn 0.2 wrote them, so old run folders and new ones read alike. Imports no torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

RECORD_SCHEMA = 2  # bump when a record's fields or meaning change: older runs are then refused

UnitKey = tuple[str, str, str, str]  # (CNN, size, photo id, category)
RecordKey = tuple[str, str, str, str, str]  # UnitKey + method
ImageId = int | str  # a COCO image id, or a photo's path relative to the dataset's root
Metric = float | bool | None  # a per-map metric's value (a boolean one is None where undefined)
JsonRow = dict[str, object]  # a line of a JSONL file of the run folder


def unit_key(row: Mapping[str, object]) -> UnitKey:
    """The unit a record, check row or line of the run folder belongs to. Ids are compared as
    text: COCO ids are ints, other formats name photos by path."""
    return (str(row["CNN"]), str(row["size"]), str(row["id"]), str(row["class"]))


@dataclass
class Record:
    """One record: a map of one method for one (photo, category, model, size). Field names are
    Python's; ``to_json`` writes ``class`` for ``category`` and ``CNN`` for ``cnn``."""

    id: ImageId
    file: str
    category: str
    method: str
    cnn: str
    size: str
    group: str
    height: int
    width: int
    metrics: dict[str, Metric]  # every per-map metric the run keeps, by its registry name
    target: int | None  # None for the baselines (no model)
    target_name: str | None
    target_rank: int | None
    target_prob: float | None
    target_rule: str | None
    top1: int | None
    top1_name: str | None
    ms: float
    rectifiers: int | None
    gradcam_layer: str | None
    note: str
    image_png: str
    mask_png: str
    map_png: str
    xcnn: str
    schema: int = RECORD_SCHEMA
    extras: dict[str, float] = field(default_factory=dict)  # the method's own per-image numbers

    def to_json(self) -> JsonRow:
        """The record as records.jsonl keeps it: 0.2's keys in 0.2's order, the metrics after
        ``width`` and the method's own numbers last."""
        out: JsonRow = {"id": self.id, "file": self.file, "class": self.category, "method": self.method,
                        "CNN": self.cnn, "size": self.size, "group": self.group, "height": self.height,
                        "width": self.width}
        out.update(self.metrics)
        # assigned one by one, as 0.2's dict literal did: a metric of the same name keeps its place
        for name in _TAIL:
            out[name] = getattr(self, name)
        out.update(self.extras)
        return out


# The fields that follow the metrics, in their order on disk.
_TAIL = ("target", "target_name", "target_rank", "target_prob", "target_rule", "top1", "top1_name", "ms",
         "rectifiers", "gradcam_layer", "note", "image_png", "mask_png", "map_png", "xcnn", "schema")


@dataclass
class UnitResult:
    """What the worker gives for one unit; the store (the single writer) writes it."""

    key: UnitKey
    records: list[Record] = field(default_factory=list)
    failure: str | None = None  # a data reason: the unit is recorded as failed, the run goes on
    files: dict[str, bytes] = field(default_factory=dict)  # RUN_DIR-relative path -> bytes
    checks: list[JsonRow] = field(default_factory=list)  # rows for RUN_DIR/checks.jsonl
    filtered: JsonRow | None = None  # the row for RUN_DIR/filtered.jsonl: target over max_target_rank
    photo: tuple[ImageId, str] = ("", "")  # (id, file name): what failures.jsonl names

    def record_rows(self) -> list[JsonRow]:
        return [r.to_json() for r in self.records]


class FieldDoc(NamedTuple):
    """A row of the records table: field names (several share a row), their type, meaning."""

    names: str
    type: str
    meaning: str


# The records table of docs/ARCHITECTURE.md, row by row ("*...*" rows stand for fields that
# registered metrics and methods add).
RECORD_TABLE: tuple[FieldDoc, ...] = (
    FieldDoc("id", "int or str", "COCO image id (other formats: the photo's path relative to the dataset root)"),
    FieldDoc("file", "str", "image file name"),
    FieldDoc("class", "str", "COCO category"),
    FieldDoc("method", "str", "a registry name (`xcnn.methods.registry`), or a baseline (`uniform`, `centre`, "
             "`edges`)"),
    FieldDoc("CNN", "str", "model name"),
    FieldDoc("size", "str", '"original" or "224" (or another side length, "320", or "HxW")'),
    FieldDoc("group", "str", '"original" or "resized" (exp.json grouping)'),
    FieldDoc("height, width", "int", "input size fed to the model"),
    FieldDoc("P, E, E_celk", "float", "energy concentration, energy in mask, total energy (P NaN when E_celk == 0)"),
    FieldDoc("chance", "float", "dilated-mask area fraction at that size"),
    FieldDoc("lift", "float", "P / chance"),
    FieldDoc("pointing_hit", "bool", "pixel of maximum energy lies inside the dilated mask"),
    FieldDoc("rma", "float", "relevance mass accuracy: sum |map|·M / sum |map|"),
    FieldDoc("top_k_intersection, relevance_rank_accuracy, auc", "float",
             "Quantus's localisation metrics on r = Σ_c map² (share of the k most relevant pixels in M; of the "
             "\\|M\\| most relevant; ROC AUC of r as a detector of M)"),
    FieldDoc("sparseness, complexity, effective_complexity", "float",
             "Quantus's complexity metrics on r (Gini index, entropy, pixels above eps of the maximum)"),
    FieldDoc("target, target_name, target_rank", "int, str, int",
             "ImageNet class explained, its name, its rank (1 = top)"),
    FieldDoc("target_prob", "float", "the model's softmax probability of the target"),
    FieldDoc("target_rule", "str", "how the target was chosen: `imagenet`, `label` or `map` (`[data] targets`)"),
    FieldDoc("top1, top1_name", "int, str", "model's top prediction"),
    FieldDoc("note", "str", '"" or why P is NaN / the record failed'),
    FieldDoc("ms", "float", "milliseconds the map cost (its share of the batch's shared passes plus its own)"),
    FieldDoc("rectifiers", "int", "rectifier calls given the rule in the forward pass (0: Deconvnet and Guided "
             "Backprop equal Gradient)"),
    FieldDoc("gradcam_layer", "str", 'the CAM layer the map read (the one "auto" chose), for methods that read a '
             "layer; else null"),
    FieldDoc("completeness", "float", "Integrated Gradients only: \\|Σ IG − (y_c(x) − y_c(0))\\| / \\|y_c(x) − "
             "y_c(0)\\|"),
    FieldDoc("*a metric's name*", "float or bool", "each per-map metric of the registry (P, chance, lift, "
             "pointing_hit and rma above are the built-in ones; a plugin's adds its own field; null in records "
             "written before it existed)"),
    FieldDoc("*a method's field*", "float", "a method's own per-image numbers (`@xcnn.method(fields=...)`; "
             "completeness above is Integrated Gradients')"),
    FieldDoc("xcnn, schema", "str, int", "the version that made the record, and the record layout"),
    FieldDoc("_part", "list", "[index, group length] of the record's write group; in records.jsonl only (crash "
             "safety; never exported)"),
    FieldDoc("image_png, mask_png, map_png", "str", "paths relative to RUN_DIR: photo at that size (JPEG), dilated "
             "mask (PNG), map picture (JPEG); at most 320 px"),
)


def records_table() -> str:
    """RECORD_TABLE as the Markdown table docs/ARCHITECTURE.md shows."""
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| {row.names} | {row.type} | {row.meaning} |" for row in RECORD_TABLE]
    return "\n".join(lines)
