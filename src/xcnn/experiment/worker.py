"""The worker: a batch of units in, their records and picture bytes out. Writes no file.

The only place of the experiment that calls the engine. A ``Worker`` keeps its model loaded
between batches (the Ray backend keeps one per actor), so the same code serves one process and
a cluster, and whoever runs it hands the results to the store, the single writer.

The checks ([checks] in the config) ride the same path: baseline batches (model "none") give
records without loading a network; a record batch at a faithfulness size also gives each
unit's deletion / insertion rows; a check batch (``Batch.check``) gives only check rows.
Check rows travel in ``UnitResult.checks`` and end in RUN_DIR/checks.jsonl.

With run.max_target_rank = K, a unit whose target's rank is over K (known only after the forward
pass) gets no maps, records nor check rows: its ``UnitResult.filtered`` row goes to
RUN_DIR/filtered.jsonl, which marks it done. Baselines have no model, hence no rank: never filtered.
"""
from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from xcnn.errors import XcnnError
from xcnn.experiment.config import RECORD_SCHEMA, Config, ModelSpec, Size
from xcnn.experiment.layout import MAPS_DIR, PICTURES_DIR
from xcnn.experiment.plan import BASELINE_MODEL, Batch, pair_key
from xcnn.experiment.store import UnitKey
from xcnn.experiment.targets import check_model, classes_for
from xcnn.files import slug, unit_stem
from xcnn.methods import registry
from xcnn import registry as plugin_registry
from xcnn.registry import MetricContext
from xcnn.registry import metrics as registry_metrics

log = logging.getLogger(__name__)

# Per-image numbers a method leaves in the engine's extras, and the record field they go to.
# What follows a unit's stem in its map pictures' names: every method the registry knows, not
# only this run's, so a unit keeps one stem when a later run adds methods.
_PICTURE_SUFFIXES = (*registry.ALL_METHODS, *registry.BASELINE_NAMES)


@dataclass
class UnitResult:
    key: UnitKey
    records: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None  # a data reason: the unit is recorded as failed, the run goes on
    files: dict[str, bytes] = field(default_factory=dict)  # RUN_DIR-relative path -> bytes
    checks: list[dict[str, Any]] = field(default_factory=list)  # rows for RUN_DIR/checks.jsonl
    filtered: dict[str, Any] | None = None  # the row for RUN_DIR/filtered.jsonl: target over max_target_rank


@dataclass
class _Unit:
    sample: Any
    photo: np.ndarray  # H×W×3 uint8 at the input size
    mask: np.ndarray  # bool H×W, dilated, at the input size


class Worker:
    """Runs batches of one config; loads a model on first use and keeps it until another is asked."""

    def __init__(self, config: Config, device: str | torch.device = "cpu", save_maps: bool = False) -> None:
        from xcnn import registry as plugins

        # A worker in another process (a Ray actor) registers the config's plugins itself.
        plugins.load_plugins([name for name, _ in config.plugins], Path(config.source).parent if config.source else None)
        self.config = config
        self.device = torch.device(device)
        self.save_maps = save_maps
        self._model: tuple[ModelSpec, Any, Any] | None = None  # (spec, LoadedModel, Explainer)
        self._masks: dict[tuple[str, str], np.ndarray] = {}  # dilations, bit-packed, per photo and category

    def run(self, batch: Batch) -> list[UnitResult]:
        """The batch's results, one per unit, in the batch's order."""
        results: dict[UnitKey, UnitResult] = {}
        units: list[_Unit] = []
        for sample in batch.samples:
            key = batch.key(sample)
            try:
                units.append(self._prepare(sample, batch.size, batch.photos))
            except XcnnError as err:
                results[key] = UnitResult(key, failure=f"unreadable image: {err}")
        if batch.model == BASELINE_MODEL:
            for unit, out in self._baselines(units, batch):
                results[batch.key(unit.sample)] = self._result(batch, unit, out, ())
            return [results[k] for k in batch.keys()]
        lm, ex = self._load(batch.model)
        if batch.check is not None:
            for k in batch.keys():  # a photo that cannot be read or explained gets no rows
                results[k] = UnitResult(k)
            outs = self._keep(batch, self._explain(ex, lm, units, batch, {}), results, lm.categories)
            for key, rows in self._rows(lm, ex, batch, outs, (batch.check,)).items():
                results[key].checks = rows
            return [results[k] for k in batch.keys()]
        outs = self._keep(batch, self._explain(ex, lm, units, batch, results), results, lm.categories)
        faith: dict[UnitKey, list] = {}
        for name, pairs in batch.checks:  # each "maps"-scope check on its own pairs of the batch
            for key, rows in self._rows(lm, ex, batch, [(u, o) for u, o in outs if pair_key(u.sample) in pairs],
                                        (name,)).items():
                faith.setdefault(key, []).extend(rows)
        for unit, out in outs:
            key = batch.key(unit.sample)
            results[key] = self._result(batch, unit, out, lm.categories)
            results[key].checks = faith.get(key, [])
        return [results[k] for k in batch.keys()]

    def _keep(self, batch: Batch, outs: list[tuple[_Unit, dict[str, Any]]], results: dict[UnitKey, UnitResult],
              names: Sequence[str]) -> list[tuple[_Unit, dict[str, Any]]]:
        """The units run.max_target_rank keeps; the others get their filtered.jsonl row."""
        from xcnn import __version__

        kept = []
        for unit, out in outs:
            if not out.get("filtered"):
                kept.append((unit, out))
                continue
            s, key = unit.sample, batch.key(unit.sample)
            results[key] = UnitResult(key, filtered={
                "CNN": key[0], "size": key[1], "id": s.image_id, "class": key[3], "file": Path(s.file).name,
                "target": out["target"], "target_name": names[out["target"]], "target_rank": out["target_rank"],
                "max_target_rank": self.config.max_target_rank, "xcnn": __version__})
        return kept

    # --- checks --------------------------------------------------------------------------

    def _baselines(self, units: list[_Unit], batch: Batch) -> list[tuple[_Unit, dict[str, Any]]]:
        """The model-free maps of the batch's photos, in the shape explain_units gives."""
        if not units:
            return []
        photos = np.stack([u.photo for u in units])
        maps, ms = {}, {}
        for m in batch.methods:
            t0 = time.perf_counter()
            maps[m] = registry.get(m).fn(photos)
            ms[m] = (time.perf_counter() - t0) * 1000.0 / len(units)  # per map, as the engine's
        return [(u, {"maps": {m: maps[m][i] for m in batch.methods}, "extras": {}, "ms": ms, "rectifiers": None,
                     "target": None, "target_rank": None, "target_prob": None, "top1": None})
                for i, u in enumerate(units)]

    def _rows(self, lm: Any, ex: Any, batch: Batch, outs: list[tuple[_Unit, dict[str, Any]]],
              checks: Sequence[str]) -> dict[UnitKey, list]:
        """The rows of ``checks`` (registry names) for these units, which have their maps, as
        RUN_DIR/checks.jsonl keeps them: each CheckRow with its unit, check and parameters."""
        from xcnn import __version__
        from xcnn.metrics.checks import CheckContext

        rows: dict[UnitKey, list] = {batch.key(u.sample): [] for u, _ in outs}
        if not outs or not checks:
            return rows
        samples = [u.sample for u, _ in outs]
        keys = [pair_key(s) for s in samples]
        maps = {m: np.stack([o["maps"][m] for _, o in outs]) for m in batch.methods}
        enabled = dict(self.config.checks.enabled())
        for name in checks:
            entry, params = plugin_registry.get_check(name), enabled.get(name)
            steps, hashed = plugin_registry.check_identity(params)
            ctx = CheckContext(
                model=lm.model, images=model_input(lm, [u for u, _ in outs], self.device),
                targets=torch.tensor([o["target"] for _, o in outs]), keys=keys, methods=batch.methods, maps=maps,
                masks=np.stack([u.mask for u, _ in outs]), photos=np.stack([u.photo for u, _ in outs]),
                params=params, seed=self.config.checks.seed, classes=len(lm.categories),
                own_classes=[classes_for(self.config.targets, self.config.target_map, s.category, lm.categories,
                                         lm.wnids) for s in samples],
                memory_mb=self.config.options.memory_mb,
                explain_fn=lambda x, t, k, model: self._maps(ex if model is None else lm.explainer(
                    batch.model.gradcam_layer, model=model), x, t, batch.methods, list(k)))
            try:
                made = list(entry.fn(ctx))
            except (XcnnError, MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as err:  # a plugin's bug: one line naming it
                if entry.origin.startswith("xcnn."):
                    raise
                raise XcnnError(f"check {name!r} ({entry.origin}) raised {type(err).__name__}: {err}") from None
            for r in made:
                if not isinstance(r, plugin_registry.CheckRow) or not 0 <= r.photo < len(samples):
                    raise XcnnError(f"check {name!r} ({entry.origin}) must yield xcnn.CheckRow values with photo in "
                                    f"0..{len(samples) - 1}, got {r!r}")
                s, value = samples[r.photo], float(r.value)
                row = {"id": s.image_id, "class": s.category, "CNN": batch.model.name, "size": batch.size.label,
                       "method": r.method, "test": r.test, "step": r.step, "measure": r.measure,
                       "value": value if math.isfinite(value) else None, "steps": steps,
                       "seed": self.config.checks.seed, "check": name, "xcnn": __version__}
                if hashed is not None:
                    row["params"] = hashed
                rows[batch.key(s)].append(row)
        return rows

    def _maps(self, ex: Any, x: torch.Tensor, targets: torch.Tensor, methods: Sequence[str],
              keys: list[str]) -> dict[str, np.ndarray]:
        out = ex.explain(x, targets=targets, methods=list(methods), **engine_kwargs(self.config, methods, keys))
        return {m: out.get(m).detach().float().cpu().numpy() for m in methods}

    def close(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _metrics(self, method: str, m: np.ndarray, unit: _Unit) -> dict[str, Any]:
        """Every per-map metric the config keeps on one map, as record fields; P, E, E_celk and
        chance always (the record's notes and the tables rest on them)."""
        ctx = MetricContext(method=method, photos=unit.photo[None])
        out: dict[str, Any] = {}
        params = dict(self.config.metric_params)
        for name, entry in registry_metrics().items():
            if name in self.config.metrics_off and name not in ("P", "chance"):
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

    # --- model ---------------------------------------------------------------------------

    def _load(self, spec: ModelSpec) -> tuple[Any, Any]:
        if self._model is not None and self._model[0] == spec:
            return self._model[1], self._model[2]
        self.close()
        lm = load_model(spec, self.device)
        check_model(self.config, lm)
        ex = lm.explainer(spec.gradcam_layer)
        self._model = (spec, lm, ex)
        log.info("%s on %s", spec.name, self.device)
        return lm, ex

    # --- one batch -----------------------------------------------------------------------

    def _prepare(self, sample: Any, size: Size, shipped: dict[str, bytes]) -> _Unit:
        from xcnn.data import dilate, resize_mask

        photo = read_photo(str(sample.file), shipped, self.config.max_pixels)
        if photo.shape[:2] != sample.mask.shape:
            raise XcnnError(f"{sample.file} is {photo.shape[1]}×{photo.shape[0]} but its mask "
                            f"{sample.mask.shape[1]}×{sample.mask.shape[0]}")
        if size.hw is not None and size.hw[0] * size.hw[1] > self.config.max_pixels:
            raise XcnnError(f"size {size.label} is over the pixel budget of {self.config.max_pixels:,}; "
                            "raise run.max_pixels if the machine has the memory")
        # Dilated at the original resolution, then resized. Each dilation is needed once per
        # model and size: kept bit-packed (1/8 of the mask the sample holds), not recomputed.
        key = (str(sample.image_id), sample.category)
        if key in self._masks:
            mask = np.unpackbits(self._masks[key], count=sample.mask.size).reshape(sample.mask.shape).astype(bool)
        else:
            mask = dilate(sample.mask, self.config.growth)
            self._masks[key] = np.packbits(mask)
        if size.hw is not None:
            h, w = size.hw
            photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))
            mask = resize_mask(mask, (h, w))
        return _Unit(sample, photo, mask)

    def _explain(self, ex: Any, lm: Any, units: list[_Unit], batch: Batch,
                 results: dict[UnitKey, UnitResult]) -> list[tuple[_Unit, dict[str, Any]]]:
        """One engine call for the batch; if it fails for a data reason, each unit alone finds the
        culprit (the others' numbers may then differ from a batched run by float rounding)."""
        if not units:
            return []
        try:
            return explain_units(ex, lm, units, batch, self.config, self.device)
        except _DATA_ERRORS as err:
            if len(units) == 1:
                results[batch.key(units[0].sample)] = UnitResult(
                    batch.key(units[0].sample), failure=f"model error: {_one_line(err)}")
                return []
            log.warning("%s: batch of %d failed (%s); retrying one by one", batch.model.name, len(units), _one_line(err))
        out = []
        for unit in units:
            try:
                out += explain_units(ex, lm, [unit], batch, self.config, self.device)
            except _DATA_ERRORS as err:
                key = batch.key(unit.sample)
                results[key] = UnitResult(key, failure=f"model error: {_one_line(err)}")
        return out

    def _result(self, batch: Batch, unit: _Unit, out: dict[str, Any], names: Sequence[str]) -> UnitResult:
        from xcnn import __version__, render

        s, size = unit.sample, batch.size
        key = batch.key(s)
        h, w = unit.mask.shape
        stem = unit_stem(str(s.image_id), s.category, _PICTURE_SUFFIXES)
        image_png = f"{PICTURES_DIR}/{size.label}/{slug(str(s.image_id))}.jpg"
        mask_png = f"{PICTURES_DIR}/{size.label}/{stem}_mask.png"
        small = np.asarray(render.shrink(Image.fromarray(unit.photo)))
        files = {image_png: encode_picture(small, "jpg"), mask_png: encode_picture(unit.mask.astype(np.uint8) * 255, "png")}
        maps: dict[str, np.ndarray] = out["maps"]
        if self.save_maps:
            files[f"{MAPS_DIR}/{slug(batch.model.name)}/{size.label}/{stem}.npz"] = encode_maps(maps, unit.mask)
        records = []
        for method in batch.methods:
            sc = self._metrics(method, maps[method], unit)
            notes = []
            if not sc["E_celk"] > 0:
                notes.append("all-zero map")
            if sc["chance"] == 0:
                notes.append("mask vanishes at this size")
            map_png = f"{PICTURES_DIR}/{size.label}/{slug(batch.model.name)}/{stem}_{method}.jpg"
            small_map = render.shrink_map(method, maps[method], small.shape[:2])
            files[map_png] = encode_picture(render.picture(method, small_map, small), "jpg")
            record = {
                "id": s.image_id,
                "file": Path(s.file).name,
                "class": s.category,
                "method": method,
                "CNN": batch.model.name,
                "size": size.label,
                "group": size.group,
                "height": int(h),
                "width": int(w),
                **sc,
                "target": out["target"],
                "target_name": None if out["target"] is None else names[out["target"]],
                "target_rank": out["target_rank"],
                "target_prob": out["target_prob"],
                "target_rule": out.get("target_rule"),
                "top1": out["top1"],
                "top1_name": None if out["top1"] is None else names[out["top1"]],
                "ms": out["ms"].get(method, math.nan),
                "rectifiers": out["rectifiers"],
                "gradcam_layer": out.get("layer") if registry.get(method).needs_layer else None,
                "note": "; ".join(notes),
                "image_png": image_png,
                "mask_png": mask_png,
                "map_png": map_png,
                "xcnn": __version__,
                "schema": RECORD_SCHEMA,
            }
            for name in registry.get(method).fields:  # the method's own per-image numbers
                if f"{method}.{name}" in out["extras"]:
                    record[name] = out["extras"][f"{method}.{name}"]
            records.append(record)
        return UnitResult(key, records, files=files)


# Errors that a photo or a model's limits cause (a photo too small for the network, a machine
# out of memory); anything else is a bug and must stop the run loudly.
_DATA_ERRORS: tuple[type[BaseException], ...] = (XcnnError, MemoryError, torch.OutOfMemoryError)


def read_photo(file: str, shipped: dict[str, bytes], max_pixels: int) -> np.ndarray:
    """The photo from its path, or from the bytes the driver shipped (Ray's ship_photos).
    load_image reads paths only, so shipped bytes go through a temporary file: the same
    decoding, pixel budget and checks as a photo read from disk."""
    from xcnn.data import load_image

    # Stored orientation, no EXIF turn (load_image's upright=False; `xcnn explain` turns): the masks were drawn on it.
    data = shipped.get(file)
    if data is None:
        return load_image(file, max_pixels=max_pixels)
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=Path(file).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return load_image(tmp.name, max_pixels=max_pixels)
        except XcnnError as err:
            raise XcnnError(str(err).replace(tmp.name, file)) from None


def load_model(spec: ModelSpec, device: str | torch.device) -> Any:
    from xcnn import models

    # Random weights (tests, timing) must be the same in every process, or a resumed run (or
    # another worker) would mix two different models; the global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.load(spec.name, weights=spec.weights, device=device, **spec.load_options())


def engine_kwargs(config: Config, methods: Sequence[str], keys: list[str]) -> dict[str, Any]:
    """What the engine takes besides the batch: the methods' parameters and the memory budget for
    the extra-pass ones, and the photos' keys (SmoothGrad seeds its noise by key)."""
    if not any(registry.get(m).extra_passes for m in methods):
        return {}
    params = {m: p for m, p in config.method_params().items() if m in methods}
    return {"params": params, "memory_mb": config.options.memory_mb, "keys": keys}


def model_input(lm: Any, units: Sequence[Any], device: torch.device) -> torch.Tensor:
    """The units' photos as the model's normalised B×3×H×W input."""
    x = torch.from_numpy(np.stack([u.photo for u in units])).to(device)
    return lm.normalize(x.permute(0, 3, 1, 2).float() / 255.0)


def explain_units(ex: Any, lm: Any, units: list[Any], batch: Batch, config: Config,
                  device: torch.device) -> list[tuple[Any, dict[str, Any]]]:
    """One engine call for ``units`` (each with ``.photo`` at the input size and ``.sample``):
    per unit its maps (float32 NumPy, nothing left on the device), target, rank, probability.
    With config.max_target_rank = K, a unit whose target's rank is over K comes back with
    ``"filtered": True`` and no maps."""
    from xcnn.experiment.targets import classes_for

    x = model_input(lm, units, device)
    allowed = torch.zeros(len(units), len(lm.categories), dtype=torch.bool)
    for i, u in enumerate(units):
        allowed[i, classes_for(config.targets, config.target_map, u.sample.category, lm.categories, lm.wnids)] = True

    def pick(logits: torch.Tensor) -> torch.Tensor:
        # the best-scoring class of the unit's category (under config.targets), from the same forward pass
        return logits.masked_fill(~allowed.to(logits.device), -math.inf).argmax(dim=1)

    keep = list(range(len(units)))
    logits: torch.Tensor | None = None
    targets: Any = pick
    if config.max_target_rank is not None:
        # The rank decides whether a unit is explained at all, so it is read first, from one
        # forward pass of the whole batch without a graph: filtered units then cost no backward
        # pass and no extra-pass method, and their targets and ranks are those of an unfiltered
        # run (same batch). The kept units are explained with these targets.
        with torch.no_grad():
            logits = lm.model(x).detach().float().cpu()
        targets = pick(logits)
        keep = [i for i in range(len(units)) if _rank(logits[i], int(targets[i])) <= config.max_target_rank]
    maps: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    ms: dict[str, float] = {}
    rectifiers = None
    if keep:
        # the whole batch where every unit is kept, so its maps are those of an unfiltered run
        sub = x if len(keep) == len(units) else x[keep]
        chosen = targets if logits is None else targets[keep]
        keys = [pair_key(units[i].sample) for i in keep]
        out = ex.explain(sub, targets=chosen, methods=list(batch.methods), **engine_kwargs(config, batch.methods, keys))
        maps = {m: out.get(m).detach().float().cpu().numpy() for m in batch.methods}
        extras = {k: v.detach().float().cpu().numpy() for k, v in getattr(out, "extras", {}).items()}
        ms = dict(getattr(out, "milliseconds", {}))
        rectifiers = int(out.rectifiers)
        layer = out.layer
        if logits is None:
            logits, targets = out.logits.detach().float().cpu(), out.targets.detach().cpu()
        del out, sub
    del x
    assert logits is not None and isinstance(targets, torch.Tensor)
    probs = torch.softmax(logits, dim=1)
    row = {i: j for j, i in enumerate(keep)}  # a unit's place in the explained sub-batch
    results = []
    for i, u in enumerate(units):
        t, j = int(targets[i]), row.get(i)
        results.append((u, {
            "maps": {} if j is None else {m: maps[m][j] for m in batch.methods},
            "extras": {} if j is None else {k: float(v[j]) for k, v in extras.items()},
            "filtered": j is None,
            "ms": ms,
            "rectifiers": rectifiers,
            "layer": None if j is None else layer,
            "target": t,
            "target_rule": config.targets,
            "target_rank": _rank(logits[i], t),
            "target_prob": float(probs[i, t]),
            "top1": int(logits[i].argmax()),
        }))
    return results


def _rank(logits: torch.Tensor, target: int) -> int:
    """The target's rank among one unit's logits: 1 + the classes scoring strictly higher."""
    return int((logits > logits[target]).sum()) + 1


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


# --- pictures -------------------------------------------------------------------------------

def encode_picture(rgb: np.ndarray, fmt: str) -> bytes:
    from xcnn.render import shrink

    img = shrink(Image.fromarray(np.ascontiguousarray(rgb)))
    if img.mode == "RGB":
        a = np.asarray(img)
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            img = img.convert("L")  # grey pictures at a third of the size
    buf = io.BytesIO()
    if fmt == "jpg":
        # Photos and maps: noisy gradient maps compress badly as PNG (~0.4 MB a unit, and the
        # encoding cost a quarter of the engine's time on 2 cores); JPEG is 10x smaller and faster.
        img.save(buf, format="JPEG", quality=88)
    else:
        img.save(buf, format="PNG", compress_level=1)  # masks: lossless
    return buf.getvalue()


def encode_maps(maps: dict[str, np.ndarray], mask: np.ndarray) -> bytes:
    """float16 maps, each scaled by its own max |value| (stored as <method>_scale) so that
    small gradients keep their precision instead of underflowing float16."""
    arrays: dict[str, Any] = {"mask": mask}
    for method, m in maps.items():
        scale = float(np.abs(m).max())
        arrays[method] = (m / scale if scale > 0 else m).astype(np.float16)
        arrays[f"{method}_scale"] = np.float32(scale)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Maps saved with --save-maps, back as float32 (method -> C×H×W), plus "mask" (bool H×W)."""
    with np.load(path) as z:
        out: dict[str, np.ndarray] = {"mask": z["mask"]}
        for name in z.files:
            if name != "mask" and not name.endswith("_scale"):
                out[name] = z[name].astype(np.float32) * np.float32(z[f"{name}_scale"])
    return out
