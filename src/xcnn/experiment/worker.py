"""The worker: a job of units in, their records and picture bytes out. Writes no file.

The only place of the experiment that calls the engine. A ``Worker`` keeps its model loaded
between jobs (the Ray backend keeps one per actor), so the same code serves one process and
a cluster, and whoever runs it hands the results to the store, the single writer.

Three kinds of job (xcnn.experiment.jobs), each with its own function: a ``BaselineJob`` gives
records without loading a network; a ``RecordJob`` gives records, and at a faithfulness size
also each unit's "maps"-scope check rows; a ``CheckJob`` gives only check rows. Check rows
travel in ``UnitResult.checks`` and end in RUN_DIR/checks.jsonl. The worker reads the config
once, into the parts each job's functions take (``Targets``, ``EngineParams``, the [metrics]
and [checks] tables).

With run.max_target_rank = K, a unit whose target's rank is over K (known only after the forward
pass) gets no maps, records nor check rows: its ``UnitResult.filtered`` row goes to
RUN_DIR/filtered.jsonl, which marks it done. Baselines have no model, hence no rank: never filtered.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from xcnn.engine import Explainer
from xcnn.errors import XcnnError
from xcnn.experiment.config import Config, ModelSpec, Size
from xcnn.experiment.explained import EngineParams, Explained, Targets, Unit, explain_units, load_model
from xcnn.experiment.jobs import BaselineJob, CheckJob, Job, RecordJob, failure, pair_key
from xcnn.experiment.outputs import CheckSetup, check_rows, unit_result
from xcnn.experiment.targets import check_model
from xcnn.methods import registry
from xcnn.models import LoadedModel
from xcnn.runfolder.records import UnitKey, UnitResult

if TYPE_CHECKING:
    from xcnn.data.dataset import Sample

log = logging.getLogger(__name__)

__all__ = ["UnitResult", "Worker", "baseline_maps", "load_model", "read_photo"]

Explaining = list[tuple[Unit, Explained]]  # the units explained, each with its explanation


class Worker:
    """Runs jobs of one config; loads a model on first use and keeps it until another is asked."""

    def __init__(self, config: Config, device: str | torch.device = "cpu", save_maps: bool = False) -> None:
        from xcnn import registry as plugins

        # A worker in another process (a Ray actor) registers the config's plugins itself.
        plugins.load_plugins([name for name, _ in config.plugins], Path(config.source).parent if config.source else None)
        self.config = config  # for check_model; the jobs read only the parts below
        self.device = torch.device(device)
        self.save_maps = save_maps
        self.choose = Targets(config.data.targets, config.data.target_map, config.run.max_target_rank)
        self.engine = EngineParams(config.method_params(), config.run.options.memory_mb)
        self.metrics, self.checks = config.metrics, config.checks
        self.growth, self.max_pixels = config.run.growth, config.run.max_pixels
        self._model: tuple[ModelSpec, LoadedModel, Explainer] | None = None
        self._masks: dict[tuple[str, str], np.ndarray] = {}  # dilations, bit-packed, per photo and category

    def run(self, job: Job) -> list[UnitResult]:
        """The job's results, one per unit, in the job's order."""
        results: dict[UnitKey, UnitResult] = {}
        units: list[Unit] = []
        for sample in job.samples:
            try:
                units.append(self._prepare(sample, job.size, job.photos))
            except XcnnError as err:
                results[job.key(sample)] = failure(job.key(sample), sample, f"unreadable image: {err}")
        if isinstance(job, BaselineJob):
            results.update(self._baselines(job, units))
        elif isinstance(job, CheckJob):
            results = self._check(job, units)  # a photo that cannot be read or explained gets no rows
        else:
            results.update(self._records(job, units))
        return [results[k] for k in job.keys()]

    def _baselines(self, job: BaselineJob, units: list[Unit]) -> dict[UnitKey, UnitResult]:
        return {job.key(u.sample): unit_result(job, u, out, (), self.metrics, self.save_maps)
                for u, out in zip(units, baseline_maps(job.methods, units))}

    def _check(self, job: CheckJob, units: list[Unit]) -> dict[UnitKey, UnitResult]:
        results = {k: UnitResult(k) for k in job.keys()}
        lm, ex = self._load(job.model)
        kept = self._keep(job, self._explain(ex, lm, job, units, {}), results, lm.categories)
        setup = CheckSetup(lm, ex, job, self.checks, self.choose, self.engine)
        rows = check_rows(setup, [u for u, _ in kept], [o for _, o in kept], [(job.check, list(range(len(kept))))])
        for key, made in rows.items():
            results[key].checks = made
        return results

    def _records(self, job: RecordJob, units: list[Unit]) -> dict[UnitKey, UnitResult]:
        results: dict[UnitKey, UnitResult] = {}
        lm, ex = self._load(job.model)
        kept = self._keep(job, self._explain(ex, lm, job, units, results), results, lm.categories)
        # each "maps"-scope check on its own pairs of the job
        runs = [(name, [i for i, (u, _) in enumerate(kept) if pair_key(u.sample) in pairs]) for name, pairs in job.checks]
        setup = CheckSetup(lm, ex, job, self.checks, self.choose, self.engine)
        rows = check_rows(setup, [u for u, _ in kept], [o for _, o in kept], [(n, p) for n, p in runs if p])
        for unit, out in kept:
            key = job.key(unit.sample)
            results[key] = unit_result(job, unit, out, lm.categories, self.metrics, self.save_maps)
            results[key].checks = rows.get(key, [])
        return results

    def _keep(self, job: RecordJob | CheckJob, outs: Explaining, results: dict[UnitKey, UnitResult],
              names: Sequence[str]) -> Explaining:
        """The units run.max_target_rank keeps; the others get their filtered.jsonl row."""
        from xcnn import __version__

        kept = []
        for unit, out in outs:
            if not out.filtered:
                kept.append((unit, out))
                continue
            s, key = unit.sample, job.key(unit.sample)
            assert out.target is not None
            results[key] = UnitResult(key, filtered={
                "CNN": key[0], "size": key[1], "id": s.image_id, "class": key[3], "file": Path(s.file).name,
                "target": out.target, "target_name": names[out.target], "target_rank": out.target_rank,
                "max_target_rank": self.choose.max_rank, "xcnn": __version__})
        return kept

    def close(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load(self, spec: ModelSpec) -> tuple[LoadedModel, Explainer]:
        if self._model is not None and self._model[0] == spec:
            return self._model[1], self._model[2]
        self.close()
        lm = load_model(spec, self.device)
        check_model(self.config, lm)
        ex = lm.explainer(spec.gradcam_layer)
        self._model = (spec, lm, ex)
        log.info("%s on %s", spec.name, self.device)
        return lm, ex

    def _prepare(self, sample: Sample, size: Size, shipped: dict[str, bytes]) -> Unit:
        from xcnn.data import dilate, resize_mask

        photo = read_photo(str(sample.file), shipped, self.max_pixels)
        if photo.shape[:2] != sample.mask.shape:
            raise XcnnError(f"{sample.file} is {photo.shape[1]}×{photo.shape[0]} but its mask "
                            f"{sample.mask.shape[1]}×{sample.mask.shape[0]}")
        if size.hw is not None and size.hw[0] * size.hw[1] > self.max_pixels:
            raise XcnnError(f"size {size.label} is over the pixel budget of {self.max_pixels:,}; "
                            "raise run.max_pixels if the machine has the memory")
        # Dilated at the original resolution, then resized. Each dilation is needed once per
        # model and size: kept bit-packed (1/8 of the mask the sample holds), not recomputed.
        key = (str(sample.image_id), sample.category)
        if key in self._masks:
            mask = np.unpackbits(self._masks[key], count=sample.mask.size).reshape(sample.mask.shape).astype(bool)
        else:
            mask = dilate(sample.mask, self.growth)
            self._masks[key] = np.packbits(mask)
        if size.hw is not None:
            h, w = size.hw
            photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))
            mask = resize_mask(mask, (h, w))
        return Unit(sample, photo, mask)

    def _explain(self, ex: Explainer, lm: LoadedModel, job: RecordJob | CheckJob, units: list[Unit],
                 results: dict[UnitKey, UnitResult]) -> Explaining:
        """One engine call for the job; if it fails for a data reason, each unit alone finds the
        culprit (the others' numbers may then differ from a batched run by float rounding)."""
        if not units:
            return []
        try:
            return list(zip(units, explain_units(ex, lm, units, job.methods, self.choose, self.engine)))
        except _DATA_ERRORS as err:
            if len(units) == 1:
                results[job.key(units[0].sample)] = failure(job.key(units[0].sample), units[0].sample,
                                                            f"model error: {_one_line(err)}")
                return []
            log.warning("%s: batch of %d failed (%s); retrying one by one", job.model.name, len(units), _one_line(err))
        out = []
        for unit in units:
            try:
                out += list(zip([unit], explain_units(ex, lm, [unit], job.methods, self.choose, self.engine)))
            except _DATA_ERRORS as err:
                results[job.key(unit.sample)] = failure(job.key(unit.sample), unit.sample, f"model error: {_one_line(err)}")
        return out


# Errors that a photo or a model's limits cause (a photo too small for the network, a machine
# out of memory); anything else is a bug and must stop the run loudly.
_DATA_ERRORS: tuple[type[BaseException], ...] = (XcnnError, MemoryError, torch.OutOfMemoryError)


def baseline_maps(methods: Sequence[str], units: list[Unit]) -> list[Explained]:
    """The model-free maps of the units' photos: no target, ms per map as the engine's."""
    if not units:
        return []
    photos = np.stack([u.photo for u in units])
    maps, ms = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        maps[m] = registry.get(m).fn(photos)
        ms[m] = (time.perf_counter() - t0) * 1000.0 / len(units)  # per map, as the engine's
    return [Explained(maps={m: maps[m][i] for m in methods}, ms=ms) for i in range(len(units))]


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


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"
