"""What a unit's maps become: its records with their pictures, and check rows.

Each function receives the parts of the config it reads (the [metrics] and [checks] tables,
``Targets``, ``EngineParams``), never the whole config.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image

from xcnn import registry as plugins
from xcnn.engine import Explainer
from xcnn.errors import XcnnError
from xcnn.experiment.config import Checks, MetricsConfig
from xcnn.experiment.explained import EngineParams, Explained, Targets, Unit, maps_of, model_input
from xcnn.experiment.jobs import BaselineJob, CheckJob, RecordJob, pair_key
from xcnn.experiment.pictures import encode_maps, encode_picture
from xcnn.files import slug, unit_stem
from xcnn.methods import registry
from xcnn.models import LoadedModel
from xcnn.runfolder.layout import MAPS_DIR, PICTURES_DIR
from xcnn.runfolder.records import JsonRow, Metric, Record, UnitKey, UnitResult

if TYPE_CHECKING:
    from xcnn.data.dataset import Sample
    from xcnn.metrics.checks import CheckContext

# What follows a unit's stem in its map pictures' names: every method the registry knows, not
# only this run's, so a unit keeps one stem when a later run adds methods.
_PICTURE_SUFFIXES = (*registry.ALL_METHODS, *registry.BASELINE_NAMES)


def metric_fields(table: MetricsConfig, method: str, m: np.ndarray, unit: Unit) -> dict[str, Metric]:
    """Every per-map metric [metrics] keeps on one map, as record fields; P, E, E_celk and chance
    always (the record's notes and the tables rest on them)."""
    ctx = plugins.MetricContext(method=method, photos=unit.photo[None])
    out: dict[str, Metric] = {}
    params = dict(table.params)
    for name, entry in plugins.metrics().items():
        if name in table.off and name not in ("P", "chance"):
            continue
        ctx.params = params.get(name, entry.params() if entry.params is not None else None)
        try:
            value = entry.fn(m[None], unit.mask[None], ctx)
        except XcnnError:
            raise
        except Exception as err:  # a plugin's bug: one line naming it, not a failed unit
            raise XcnnError(f"metric {name!r} ({entry.origin}) raised {type(err).__name__}: {err}") from None
        values = value if isinstance(value, dict) else {name: value}
        for key, v in values.items():
            number = float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
            out[key] = (None if math.isnan(number) else number == 1.0) if entry.boolean else number
        ctx.values.update(out)
    return out


def unit_result(job: RecordJob | BaselineJob, unit: Unit, out: Explained, names: Sequence[str],
                metrics: MetricsConfig, save_maps: bool) -> UnitResult:
    """A unit's records, one per method of the job, with its pictures (and maps, when saved)."""
    from xcnn import __version__, render

    s, size, cnn = unit.sample, job.size, job.model.name
    h, w = unit.mask.shape
    stem = unit_stem(str(s.image_id), s.category, _PICTURE_SUFFIXES)
    image_png = f"{PICTURES_DIR}/{size.label}/{slug(str(s.image_id))}.jpg"
    mask_png = f"{PICTURES_DIR}/{size.label}/{stem}_mask.png"
    small = np.asarray(render.shrink(Image.fromarray(unit.photo)))
    files = {image_png: encode_picture(small, "jpg"), mask_png: encode_picture(unit.mask.astype(np.uint8) * 255, "png")}
    if save_maps:
        files[f"{MAPS_DIR}/{slug(cnn)}/{size.label}/{stem}.npz"] = encode_maps(out.maps, unit.mask)
    records = []
    for method in job.methods:
        sc = metric_fields(metrics, method, out.maps[method], unit)
        total, notes = sc["E_celk"], []
        if not (isinstance(total, float) and total > 0):  # NaN too
            notes.append("all-zero map")
        if sc["chance"] == 0:
            notes.append("mask vanishes at this size")
        map_png = f"{PICTURES_DIR}/{size.label}/{slug(cnn)}/{stem}_{method}.jpg"
        small_map = render.shrink_map(method, out.maps[method], small.shape[:2])
        files[map_png] = encode_picture(render.picture(method, small_map, small), "jpg")
        entry = registry.get(method)
        records.append(Record(
            id=s.image_id, file=Path(s.file).name, category=s.category, method=method, cnn=cnn, size=size.label,
            group=size.group, height=int(h), width=int(w), metrics=sc, target=out.target,
            target_name=None if out.target is None else names[out.target], target_rank=out.target_rank,
            target_prob=out.target_prob, target_rule=out.target_rule, top1=out.top1,
            top1_name=None if out.top1 is None else names[out.top1], ms=out.ms.get(method, math.nan),
            rectifiers=out.rectifiers, gradcam_layer=out.layer if entry.needs_layer else None,
            note="; ".join(notes), image_png=image_png, mask_png=mask_png, map_png=map_png, xcnn=__version__,
            extras={n: out.extras[f"{method}.{n}"] for n in entry.fields if f"{method}.{n}" in out.extras}))
    return UnitResult(job.key(s), records, files=files, photo=(s.image_id, Path(s.file).name))


@dataclass
class CheckSetup:
    """What the checks of one job read besides the units: the model, how maps and targets are
    made, and the [checks] table."""

    lm: LoadedModel
    ex: Explainer
    job: RecordJob | CheckJob
    checks: Checks
    choose: Targets
    engine: EngineParams


class _Inputs(NamedTuple):
    """The units' arrays a check reads, built once for all the checks of a job."""

    images: torch.Tensor  # B×3×H×W, the model's input
    targets: torch.Tensor
    maps: dict[str, np.ndarray]
    masks: np.ndarray
    photos: np.ndarray

    def take(self, places: list[int]) -> _Inputs:
        """The rows of the units at ``places``: fresh arrays, equal to those built for them alone
        (a check may change what it is given in place; the next check must not see it)."""
        if len(places) == len(self.targets):
            return _Inputs(self.images.clone(), self.targets.clone(), {m: a.copy() for m, a in self.maps.items()},
                           self.masks.copy(), self.photos.copy())
        pick = torch.tensor(places, dtype=torch.long)
        images = self.images[pick]
        if self.images.is_contiguous(memory_format=torch.channels_last):
            # as model_input lays them out: a convolution's algorithm, hence its last bits, follows the layout
            images = images.contiguous(memory_format=torch.channels_last)
        return _Inputs(images, self.targets[pick], {m: a[places] for m, a in self.maps.items()},
                       self.masks[places], self.photos[places])


def check_rows(setup: CheckSetup, units: list[Unit], outs: list[Explained],
               runs: Sequence[tuple[str, list[int]]]) -> dict[UnitKey, list[JsonRow]]:
    """The rows of each check of ``runs`` (a registry name and the places in ``units`` it runs
    on), as RUN_DIR/checks.jsonl keeps them. The model input is built once for all the checks."""
    rows: dict[UnitKey, list[JsonRow]] = {setup.job.key(u.sample): [] for u in units}
    if not units or not runs:
        return rows
    lm, job = setup.lm, setup.job
    inputs = _Inputs(model_input(lm, units, lm.device), torch.tensor([o.target for o in outs]),
                     {m: np.stack([o.maps[m] for o in outs]) for m in job.methods},
                     np.stack([u.mask for u in units]), np.stack([u.photo for u in units]))
    enabled = dict(setup.checks.enabled())
    for name, places in runs:
        samples = [units[i].sample for i in places]
        ctx = _context(setup, enabled.get(name), samples, inputs.take(places))
        for s, row in _run_check(name, ctx, samples, setup):
            rows[job.key(s)].append(row)
    return rows


def _context(setup: CheckSetup, params: object, samples: list[Sample], inputs: _Inputs) -> CheckContext:
    from xcnn.metrics.checks import CheckContext

    lm, ex, job = setup.lm, setup.ex, setup.job

    def explain(x: torch.Tensor, t: torch.Tensor, keys: Sequence[str], model: torch.nn.Module | None
                ) -> dict[str, np.ndarray]:
        on = ex if model is None else lm.explainer(job.model.gradcam_layer, model=model)
        return maps_of(on, setup.engine, job.methods)(x, t, list(keys))

    return CheckContext(
        model=lm.model, images=inputs.images, targets=inputs.targets, keys=[pair_key(s) for s in samples],
        methods=job.methods, maps=inputs.maps, masks=inputs.masks, photos=inputs.photos, params=params,
        seed=setup.checks.seed, classes=len(lm.categories),
        own_classes=[setup.choose.classes(s.category, lm) for s in samples], memory_mb=setup.engine.memory_mb,
        explain_fn=explain)


def _run_check(name: str, ctx: CheckContext, samples: list[Sample],
               setup: CheckSetup) -> list[tuple[Sample, JsonRow]]:
    """One check's rows, each with its sample; a plugin's bug or wrong rows give one line."""
    from xcnn import __version__

    entry = plugins.get_check(name)
    steps, hashed = plugins.check_identity(ctx.params)
    try:
        made = list(entry.fn(ctx))
    except (XcnnError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as err:  # a plugin's bug: one line naming it
        if entry.origin.startswith("xcnn."):
            raise
        raise XcnnError(f"check {name!r} ({entry.origin}) raised {type(err).__name__}: {err}") from None
    out = []
    for r in made:
        if not isinstance(r, plugins.CheckRow) or not 0 <= r.photo < len(samples):
            raise XcnnError(f"check {name!r} ({entry.origin}) must yield xcnn.CheckRow values with photo in "
                            f"0..{len(samples) - 1}, got {r!r}")
        s, value = samples[r.photo], float(r.value)
        row: JsonRow = {"id": s.image_id, "class": s.category, "CNN": setup.job.model.name,
                        "size": setup.job.size.label, "method": r.method, "test": r.test, "step": r.step,
                        "measure": r.measure, "value": value if math.isfinite(value) else None, "steps": steps,
                        "seed": setup.checks.seed, "check": name, "xcnn": __version__}
        if hashed is not None:
            row["params"] = hashed
        out.append((s, row))
    return out
