"""The experiment (SPEC §3): every (model, size, image, category) unit, all its maps, its records.

Work is split into batches fixed by the config alone (not by what is already done), so a
resumed run feeds the model exactly the batches an uninterrupted one does and gets bit-for-bit
the same numbers. Each unit's records are appended and fsynced as soon as they exist; nothing
but the current batch is held in memory.
"""
from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from xcnn import metrics
from xcnn.errors import XcnnError
from xcnn.experiment.config import Config, ModelSpec, Size
from xcnn.experiment.store import JsonlStore, UnitKey, write_atomic

log = logging.getLogger(__name__)

PICTURE_SIDE = 320  # longest side of the pictures kept for the report (its grids draw at 320)
CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"
FAILURES_FILE = "failures.jsonl"


@dataclass
class Summary:
    records: int = 0  # records written by this call
    units_done_before: int = 0
    units_total: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed units by reason, this call
    skipped_images: dict[str, int] = field(default_factory=dict)  # dataset selection, by reason
    seconds: float = 0.0


def run(config: Config, run_dir: str | Path, save_maps: bool = False, report: bool = True) -> Summary:
    """Run (or resume) the experiment into ``run_dir`` and write its exports (and report)."""
    from xcnn.experiment.export import write_exports

    start = time.perf_counter()
    run_dir = Path(run_dir)
    _check_run_dir(config, run_dir)
    _check_data_paths(config)
    device = _device(config.device)
    _preflight(config.models, device)  # before the data: a missing model fails in seconds
    samples, skipped = _select(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(config, run_dir)

    summary = Summary(skipped_images=dict(skipped))
    summary.units_total = len(config.models) * len(config.sizes) * len(samples)
    _forget_failures(run_dir / FAILURES_FILE)
    with JsonlStore(run_dir / RECORDS_FILE, len(config.methods)) as records, \
            JsonlStore(run_dir / FAILURES_FILE, 1) as failures:
        done = records.done | failures.done
        summary.units_done_before = len(done)
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(), tqdm(total=summary.units_total, initial=len(done), unit="unit", desc="xcnn run",
                  dynamic_ncols=True) as bar:
            masks: MaskCache = {}
            for spec in config.models:
                todo = [(size, batch) for size in config.sizes for batch in _batches(samples, size, config.batch_size)
                        if any(_key(spec, size, s) not in done for s in batch)]
                if not todo:
                    continue
                _run_model(config, spec, todo, device, run_dir, save_maps, done, records, failures, summary, bar,
                           masks)
    summary.seconds = time.perf_counter() - start
    _log_summary(summary)
    write_exports(run_dir)
    if report:
        _write_report(run_dir)
    return summary


# --- set-up -----------------------------------------------------------------------------

def _check_run_dir(config: Config, run_dir: Path) -> None:
    file = run_dir / CONFIG_FILE
    if not file.exists():
        return
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        raise XcnnError(f"{file}: unreadable; this is not an xcnn run folder - choose another --out") from None
    if stored != config.hash():
        raise XcnnError(
            f"{run_dir} holds a run made with a different config than {config.source or 'this one'}; "
            "use another --out folder (or delete it to start over)"
        )


def _write_config(config: Config, run_dir: Path) -> None:
    from xcnn import __version__

    body = {"hash": config.hash(), "config": config.to_dict(), "source": config.source, "xcnn": __version__}
    write_atomic(run_dir / CONFIG_FILE, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def _select(config: Config, run_dir: Path) -> tuple[list[Any], dict[str, int]]:
    from xcnn.data import CocoDataset

    if config.demo:
        from xcnn.data import demo

        ann_file, image_dir = demo.build(Path(config.demo_dir) if config.demo_dir else run_dir / "demo-data")
    else:
        ann_file, image_dir = Path(str(config.ann_file)), Path(str(config.image_dir))
    dataset = CocoDataset(ann_file, image_dir)
    samples, skipped = dataset.select(list(config.categories), config.images_per_category, config.seed, config.min_area)
    if not samples:
        raise XcnnError(
            f"no usable image for {', '.join(config.categories)} in {ann_file} "
            f"(skipped: {dict(skipped) or 'none found'}); check the categories and data.min_area"
        )
    log.info("%d images selected (%s per category); skipped: %s", len(samples), config.images_per_category,
             dict(skipped) or "none")
    return samples, skipped


def _forget_failures(path: Path) -> None:
    """A rerun tries the failed units again: a deterministic failure (an unreadable file) comes
    back unchanged, a transient one (out of GPU memory) gets its records, which is what an
    uninterrupted run on a healthy machine gives."""
    if path.exists() and path.stat().st_size:
        count = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        log.info("trying %d unit(s) that failed before again", count)
        write_atomic(path, b"")


def _check_data_paths(config: Config) -> None:
    """Cheap checks first: a missing dataset should not wait for every model to load."""
    if config.demo:
        return
    hint = "fix the path in the config, or fetch the data with 'xcnn data coco'"
    if not Path(str(config.ann_file)).is_file():
        raise XcnnError(f"data.ann_file: {config.ann_file} not found; {hint} ({config.source})")
    if not Path(str(config.image_dir)).is_dir():
        raise XcnnError(f"data.image_dir: {config.image_dir} is not a folder; {hint} ({config.source})")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise XcnnError(f'run.device = "{name}" but no CUDA device is available; use "cpu" or "auto"')
    return torch.device(name)


def _preflight(specs: Sequence[ModelSpec], device: torch.device) -> None:
    """Load each model once and check its Grad-CAM layer, so a bad entry fails before any work."""
    from xcnn import Explainer

    for i, spec in enumerate(specs):
        try:
            lm = _load(spec, "cpu")
            Explainer(lm.model, target_layer=_layer(spec, lm))
        except XcnnError as err:
            raise XcnnError(f"models[{i}] ({spec.name}): {err}") from None
        del lm


def _load(spec: ModelSpec, device: str | torch.device) -> Any:
    from xcnn import models

    # Random weights (tests, timing) must be the same in every process, or a resumed run
    # would mix two different models; the global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.load(spec.name, weights=spec.weights, device=device)


def _layer(spec: ModelSpec, lm: Any) -> str:
    """The config's Grad-CAM layer, else the models layer's choice for that model."""
    return spec.gradcam_layer if spec.gradcam_layer != "auto" else (lm.gradcam_layer or "auto")


def _key(spec: ModelSpec, size: Size, sample: Any) -> UnitKey:
    return (spec.name, size.label, int(sample.image_id), sample.category)


def _batches(samples: Sequence[Any], size: Size, batch_size: int) -> Iterator[list[Any]]:
    """Batches of equal input size, in an order fixed by the sample list alone."""
    if size.hw is not None:
        groups: dict[tuple[int, int], list[Any]] = {size.hw: list(samples)}
    else:
        groups = {}
        for s in samples:
            groups.setdefault(tuple(s.mask.shape), []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


# --- the work ---------------------------------------------------------------------------

@dataclass
class _Unit:
    sample: Any
    photo: np.ndarray  # H×W×3 uint8 at the input size
    mask: np.ndarray  # bool H×W, dilated, at the input size


def _run_model(config: Config, spec: ModelSpec, todo: list[tuple[Size, list[Any]]], device: torch.device,
               run_dir: Path, save_maps: bool, done: set[UnitKey], records: JsonlStore,
               failures: JsonlStore, summary: Summary, bar: Any, masks: MaskCache) -> None:
    from xcnn import Explainer

    lm = _load(spec, device)
    log.info("%s on %s", spec.name, device)
    # On a GPU, metrics, pictures and the fsynced append of a batch run on one writer thread
    # while the engine works on the next batch (one thread keeps the store's order
    # deterministic). On the CPU the writer would steal cores from torch's own threads, and
    # measured on 2 cores that slowed the engine by more than the writer's work: stay serial.
    pending: Future[None] | None = None
    workers = 1 if device.type != "cpu" else 0
    with Explainer(lm.model, target_layer=_layer(spec, lm)) as ex, \
            (ThreadPoolExecutor(max_workers=1, thread_name_prefix="xcnn-writer") if workers else _Inline()) as writer:
        for size, batch in todo:
            units: list[_Unit] = []
            for sample in batch:
                try:
                    units.append(_prepare(sample, size, config.growth, masks))
                except XcnnError as err:
                    _fail(failures, spec, size, sample, f"unreadable image: {err}", done, summary, bar)
            try:
                results = _explain(ex, lm, units, config.methods, device)
            except Exception as err:  # noqa: BLE001 - one bad input must not end a long run
                if len(units) == 1:
                    _fail(failures, spec, size, units[0].sample, f"model error: {_one_line(err)}", done, summary, bar)
                    continue
                # Find the culprit: each unit alone. Numbers of the others may then differ from
                # a batched run by float rounding; failures are rare enough to accept that.
                log.warning("%s: batch of %d failed (%s); retrying one by one", spec.name, len(units), _one_line(err))
                results = []
                for unit in units:
                    try:
                        results += _explain(ex, lm, [unit], config.methods, device)
                    except Exception as err1:  # noqa: BLE001
                        _fail(failures, spec, size, unit.sample, f"model error: {_one_line(err1)}", done, summary, bar)
            if pending is not None:
                pending.result()  # its errors surface here, and no more than one batch waits
            pending = writer.submit(_store_batch, spec, size, results, lm.categories, run_dir, save_maps,
                                    config.methods, done, records, summary, bar)
            del results
        if pending is not None:
            pending.result()
    del lm
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _store_batch(spec: ModelSpec, size: Size, results: list[Any], names: Sequence[str], run_dir: Path,
                 save_maps: bool, methods: Sequence[str], done: set[UnitKey], records: JsonlStore,
                 summary: Summary, bar: Any) -> None:
    for unit, (maps, pred) in results:
        key = _key(spec, size, unit.sample)
        if key in done:  # done before an interruption; the batch ran only to keep numbers identical
            continue
        try:
            recs = _records(spec, size, unit, maps, pred, names, run_dir, save_maps, methods)
            records.append(recs)  # pictures and maps are on disk before the unit counts as done
        except OSError as err:
            raise XcnnError(f"cannot write into {run_dir} ({err}); free disk space or fix permissions, "
                            "then rerun the same command to resume") from None
        done.add(key)
        summary.records += len(recs)
        bar.update(1)


class _Inline:
    """The executor interface, run in the caller's thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        future: Future[None] = Future()
        fn(*args)
        future.set_result(None)
        return future


MaskCache = dict[tuple[int, str], np.ndarray]


def _prepare(sample: Any, size: Size, growth: float, cache: MaskCache | None = None) -> _Unit:
    from xcnn.data import dilate, load_image, resize_mask

    photo = load_image(sample.file)
    if photo.shape[:2] != sample.mask.shape:
        raise XcnnError(f"{sample.file} is {photo.shape[1]}×{photo.shape[0]} but its mask "
                        f"{sample.mask.shape[1]}×{sample.mask.shape[0]}")
    # Dilated at the original resolution, then resized (SPEC §2). Each sample's dilation is
    # needed once per model and size; it is kept bit-packed (1/8 of the bool mask the
    # sample already holds) rather than recomputed.
    key = (int(sample.image_id), sample.category)
    if cache is not None and key in cache:
        mask = np.unpackbits(cache[key], count=sample.mask.size).reshape(sample.mask.shape).astype(bool)
    else:
        mask = dilate(sample.mask, growth)
        if cache is not None:
            cache[key] = np.packbits(mask)
    if size.hw is not None:
        h, w = size.hw
        photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))
        mask = resize_mask(mask, (h, w))
    return _Unit(sample, photo, mask)


@dataclass
class _Prediction:
    target: int
    target_rank: int
    target_prob: float
    top1: int


def _explain(ex: Any, lm: Any, units: list[_Unit], methods: Sequence[str],
             device: torch.device) -> list[tuple[_Unit, tuple[dict[str, np.ndarray], _Prediction]]]:
    """One engine call for the batch; maps come back as float32 NumPy, nothing stays on the device."""
    from xcnn.data import imagenet_classes

    if not units:
        return []
    x = torch.from_numpy(np.stack([u.photo for u in units])).to(device)
    x = lm.normalize(x.permute(0, 3, 1, 2).float() / 255.0)
    allowed = torch.zeros(len(units), 1000, dtype=torch.bool)
    for i, u in enumerate(units):
        allowed[i, imagenet_classes(u.sample.category)] = True

    def pick(logits: torch.Tensor) -> torch.Tensor:
        # the best-scoring ImageNet class of the unit's category, from the same forward pass
        return logits.masked_fill(~allowed.to(logits.device), -math.inf).argmax(dim=1)

    out = ex.explain(x, targets=pick, methods=list(methods))
    maps = {m: out.get(m).detach().float().cpu().numpy() for m in methods}
    logits = out.logits.detach().float().cpu()
    targets = out.targets.detach().cpu()
    del out, x
    probs = torch.softmax(logits, dim=1)
    results = []
    for i, u in enumerate(units):
        t = int(targets[i])
        pred = _Prediction(
            target=t,
            target_rank=int((logits[i] > logits[i, t]).sum()) + 1,
            target_prob=float(probs[i, t]),
            top1=int(logits[i].argmax()),
        )
        results.append((u, ({m: maps[m][i] for m in methods}, pred)))
    return results


def _records(spec: ModelSpec, size: Size, unit: _Unit, maps: dict[str, np.ndarray], pred: _Prediction,
             names: Sequence[str], run_dir: Path, save_maps: bool, methods: Sequence[str]) -> list[dict[str, Any]]:
    from xcnn import render

    s = unit.sample
    h, w = unit.mask.shape
    stem = f"{s.image_id}_{_slug(s.category)}"
    image_png = f"pictures/{size.label}/{s.image_id}.jpg"
    mask_png = f"pictures/{size.label}/{stem}_mask.png"
    small = _shrink_photo(unit.photo)
    _save_picture(run_dir / image_png, small, once=True)
    _save_picture(run_dir / mask_png, unit.mask.astype(np.uint8) * 255, once=True)
    if save_maps:
        _save_maps(run_dir / f"maps/{spec.name}/{size.label}/{stem}.npz", maps, unit.mask)

    masks = unit.mask[None]
    recs = []
    for method in methods:
        sc = {k: float(v[0]) for k, v in metrics.scores(maps[method][None], masks).items()}
        notes = []
        if not sc["E_celk"] > 0:
            notes.append("all-zero map")
        if sc["chance"] == 0:
            notes.append("mask vanishes at this size")
        map_png = f"pictures/{size.label}/{spec.name}/{stem}_{method}.jpg"
        _save_picture(run_dir / map_png, render.picture(method, _shrink_map(method, maps[method], small.shape[:2]), small))
        recs.append({
            "id": int(s.image_id),
            "file": Path(s.file).name,
            "class": s.category,
            "method": method,
            "CNN": spec.name,
            "size": size.label,
            "group": size.group,
            "height": int(h),
            "width": int(w),
            "P": sc["P"],
            "E": sc["E"],
            "E_celk": sc["E_celk"],
            "chance": sc["chance"],
            "lift": sc["P"] / sc["chance"] if sc["chance"] > 0 else math.nan,
            "pointing_hit": None if math.isnan(sc["pointing_hit"]) else sc["pointing_hit"] == 1.0,
            "rma": sc["rma"],
            "target": pred.target,
            "target_name": names[pred.target],
            "target_rank": pred.target_rank,
            "target_prob": pred.target_prob,
            "top1": pred.top1,
            "top1_name": names[pred.top1],
            "note": "; ".join(notes),
            "image_png": image_png,
            "mask_png": mask_png,
            "map_png": map_png,
        })
    return recs


def _fail(failures: JsonlStore, spec: ModelSpec, size: Size, sample: Any, reason: str,
          done: set[UnitKey], summary: Summary, bar: Any) -> None:
    key = _key(spec, size, sample)
    if key in done:
        return
    log.warning("%s %s image %s (%s): %s", spec.name, size.label, sample.image_id, sample.category, reason)
    failures.append([{"CNN": spec.name, "size": size.label, "id": int(sample.image_id), "class": sample.category,
                      "file": Path(sample.file).name, "reason": reason}])
    done.add(key)
    summary.failures[reason.split(":")[0]] += 1
    bar.update(1)


# --- files --------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _shrink_photo(photo: np.ndarray) -> np.ndarray:
    """The photo at picture size (at most PICTURE_SIDE on its long side)."""
    h, w = photo.shape[:2]
    if max(h, w) <= PICTURE_SIDE:
        return photo
    scale = PICTURE_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))


def _shrink_map(method: str, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A map brought to picture size *before* rendering (rendering full-size maps only to
    shrink the pictures cost more than the metrics). Grey pictures show the channel-summed
    magnitude, so that is what gets area-averaged; Grad-CAM is resized bilinearly."""
    if m.shape[1:] == hw:
        return m
    plane = m[0] if method == "gradcam" else np.abs(m).sum(axis=0)
    resample = Image.Resampling.BILINEAR if method == "gradcam" else Image.Resampling.BOX
    small = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize((hw[1], hw[0]), resample)
    return np.asarray(small)[None]


def _save_picture(path: Path, rgb: np.ndarray, once: bool = False) -> None:
    if once and path.exists():
        return
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if max(img.size) > PICTURE_SIDE:
        scale = PICTURE_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    if img.mode == "RGB":
        a = np.asarray(img)
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            img = img.convert("L")  # grey pictures at a third of the size
    buf = io.BytesIO()
    if path.suffix == ".jpg":
        # Photos and maps: noisy gradient maps compress badly as PNG (~0.4 MB a unit, and the
        # encoding cost a quarter of the engine's time on 2 cores); JPEG is 10x smaller and faster.
        img.save(buf, format="JPEG", quality=88)
    else:
        img.save(buf, format="PNG", compress_level=1)  # masks: lossless
    path.parent.mkdir(parents=True, exist_ok=True)
    # No fsync: a killed process loses nothing from the page cache, and the unit's records,
    # which are fsynced, are only appended after its pictures exist.
    write_atomic(path, buf.getvalue(), durable=False)


def _save_maps(path: Path, maps: dict[str, np.ndarray], mask: np.ndarray) -> None:
    """float16 maps, each scaled by its own max |value| (stored as <method>_scale) so that
    small gradients keep their precision instead of underflowing float16."""
    arrays: dict[str, np.ndarray] = {"mask": mask}
    for method, m in maps.items():
        scale = float(np.abs(m).max())
        arrays[method] = (m / scale if scale > 0 else m).astype(np.float16)
        arrays[f"{method}_scale"] = np.float32(scale)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Maps saved with --save-maps, back as float32 (method -> C×H×W), plus "mask" (bool H×W)."""
    with np.load(path) as z:
        out: dict[str, np.ndarray] = {"mask": z["mask"]}
        for name in z.files:
            if name != "mask" and not name.endswith("_scale"):
                out[name] = z[name].astype(np.float32) * np.float32(z[f"{name}_scale"])
    return out


def _log_summary(s: Summary) -> None:
    failed = dict(s.failures) or "none"
    log.info(
        "%d records written in %.1f s; units: %d total, %d already done, %d failed this run (%s); "
        "images skipped by the selection: %s",
        s.records, s.seconds, s.units_total, s.units_done_before, sum(s.failures.values()), failed,
        s.skipped_images or "none",
    )


def _write_report(run_dir: Path) -> None:
    try:
        from xcnn.report import write_report
    except ImportError as err:
        log.warning("no report written (%s); run `xcnn report %s` once the report layer is installed", err, run_dir)
        return
    write_report(run_dir)
