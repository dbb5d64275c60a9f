"""Explaining one photo for the page: the model, the target, the maps and their numbers.

One worker thread runs every explanation, one at a time, in the order asked (the queue): a
model serves every browser tab, and two explanations never share the CPU or the model's hooks.
Models stay loaded in a small LRU. The single-pass methods come first, in one engine call, so
their maps show within a second or two; each multi-pass method follows alone, its passes told
to the page as progress.

The numbers are those of `xcnn run` by construction: the photo in its stored orientation,
resized with PIL's bilinear filter, the mask dilated at the photo's resolution and then resized
(nearest), and the registry's per-map metrics on the same arrays.
"""
from __future__ import annotations

import io
import logging
import math
import secrets
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from xcnn.app.photos import Photo, PhotoStore
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

SHOWN_METRICS = ("P", "chance", "lift", "pointing_hit")
MODEL_CACHE = 2  # loaded models kept; each is tens to hundreds of MB
JOBS_KEPT = 20


@dataclass
class Request:
    photo: str  # an upload's token or a demo key
    model: str = "mobilenet_v2"
    weights: str | None = None  # an uploaded state-dict's token, or a --weights path (command line)
    methods: tuple[str, ...] = ("gradient", "gradcam")
    size: str = "224"  # "original", a side, or HxW
    target: int | None = None  # None: the category's best class (dataset photo), else the top-1
    growth: float = 0.2


@dataclass
class Input:
    """One photo as the engine takes it: the model's input, the class explained, the RGB it came
    from (to draw over) and the key that seeds per-photo randomness (SmoothGrad), as a run's."""

    x: Any
    target: Any  # a class, or a function of the logits that picks it (the first engine call)
    rgb: np.ndarray
    key: str


@dataclass
class MapResult:
    method: str
    ms: float
    png: bytes
    raw: np.ndarray  # C×H×W float32
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    request: Request
    state: str = "queued"  # queued, running, done, failed
    error: str = ""
    progress: str = ""
    maps: dict[str, MapResult] = field(default_factory=dict)
    top5: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # target, size, mask, model
    mask: np.ndarray | None = None  # the dilated mask at the input size

    def summary(self) -> dict[str, Any]:
        maps = [{"method": m.method, "ms": round(m.ms, 1), **m.numbers} for m in list(self.maps.values())]
        return {"id": self.id, "state": self.state, "error": self.error, "progress": self.progress,
                "top5": self.top5, "info": self.info, "maps": maps}


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    return text if isinstance(err, XcnnError) else f"{type(err).__name__}: {text}"


def parse_size(text: str) -> tuple[int, int] | None:
    """ "original" -> None, "224" -> (224, 224), "240x320" -> (240, 320); XcnnError otherwise."""
    text = text.strip().lower()
    if text == "original":
        return None
    try:
        parts = [int(p) for p in text.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(8 <= p <= 8192 for p in parts):
        raise XcnnError(f"size {text!r}: use original, a side of 8 to 8192 (224) or HxW (240x320)")
    return parts[0], parts[1]


class Models:
    """Loaded models, the most recently used last; at most MODEL_CACHE of them."""

    def __init__(self, device: str, command_line: dict[str, str | None]) -> None:
        self.device = device
        self.command_line = command_line  # names given to `xcnn app --model`, with their --weights
        self._loaded: OrderedDict[tuple[str, str | None], Any] = OrderedDict()

    def get(self, name: str, weights: str | None) -> Any:
        from xcnn import models

        if name.startswith("python:") and name not in self.command_line:
            raise XcnnError(f"model {name!r}: python: models run code, so only `xcnn app --model {name}` may load them")
        key = (name, weights)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        models.check_name(name)
        import torch

        with torch.random.fork_rng(devices=[]):  # random weights as a run's: seeded, global RNG untouched
            torch.manual_seed(0)
            lm = models.load(name, weights=weights, device=self.device)
        self._loaded[key] = (lm, lm.explainer(lm.gradcam_layer))
        while len(self._loaded) > MODEL_CACHE:
            self._loaded.popitem(last=False)
        return self._loaded[key]


class Explaining:
    """The queue of explanations and their results."""

    def __init__(self, photos: PhotoStore, models: Models) -> None:
        self.photos = photos
        self.models = models
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xcnn-explain")

    def submit(self, request: Request) -> Job:
        from xcnn import registry

        if not request.methods:
            raise XcnnError("choose at least one method")
        registry.check(request.methods)
        parse_size(request.size)
        if not 0 <= request.growth <= 10:
            raise XcnnError(f"growth {request.growth}: use a share of the mask's area, e.g. 0.2")
        self.photos.get(request.photo)
        job = Job(secrets.token_hex(6), request)
        self.jobs[job.id] = job
        while len(self.jobs) > JOBS_KEPT:
            self.jobs.popitem(last=False)
        self._pool.submit(self._run, job)
        return job

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise XcnnError("that explanation is no longer kept; explain again")
        return job

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> None:
        job.state = "running"
        try:
            run_job(job, self.photos.get(job.request.photo), self._model(job))
            job.state = "done"
        except (XcnnError, MemoryError, RuntimeError, ValueError, OSError) as err:
            job.error, job.state = one_line(err), "failed"
        except Exception as err:  # a bug: the page gets one line, the log the traceback
            log.exception("explaining failed")
            job.error, job.state = one_line(err), "failed"
        finally:
            job.progress = ""

    def _model(self, job: Job) -> Any:
        job.progress = f"loading {job.request.model}"
        weights = job.request.weights
        if weights is not None and not weights.startswith("/"):
            weights = str(self.photos.weights(weights))
        elif weights is None:
            weights = self.models.command_line.get(job.request.model)
        try:
            return self.models.get(job.request.model, weights)
        except XcnnError as err:
            raise XcnnError(f"model {job.request.model!r} did not load: {err}") from None


def prepare(photo: Photo, size: tuple[int, int] | None, growth: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo at the input size and its dilated mask there (None without a mask), as the worker."""
    from xcnn.data import dilate, resize_mask

    rgb, mask = photo.rgb, None if photo.mask is None else dilate(photo.mask, growth)
    if size is not None:
        h, w = size
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        mask = None if mask is None else resize_mask(mask, (h, w))
    return rgb, mask


def run_job(job: Job, photo: Photo, loaded: tuple[Any, Any]) -> None:
    import torch

    from xcnn import registry

    lm, ex = loaded
    req = job.request
    rgb, job.mask = prepare(photo, parse_size(req.size), req.growth)
    x = lm.normalize(torch.from_numpy(rgb.copy()).to(lm.device).permute(2, 0, 1)[None].float() / 255.0)
    if req.target is not None and not 0 <= req.target < len(lm.categories):
        raise XcnnError(f"target {req.target}: {lm.name} has classes 0 to {len(lm.categories) - 1}")

    def pick(logits: Any) -> Any:  # from the first engine call's own forward pass: no extra one
        return torch.tensor([choose_target(req.target, photo.category, logits[0].float().cpu(), lm)],
                            device=logits.device)

    fast = [m for m in req.methods if not registry.get(m).extra_passes]
    slow = [m for m in req.methods if registry.get(m).extra_passes]
    key = photo.token[5:] if photo.token.startswith("demo:") else photo.token  # SmoothGrad's seed key, as a run's
    inp = Input(x, pick, rgb, key)
    for group in ([fast] if fast else []) + [[m] for m in slow]:
        out = explain_group(job, ex, inp, group)
        if not job.info:
            inp.target = int(out.targets[0])
            describe(job, lm, out.logits[0].detach().float().cpu(), inp.target, photo)


def describe(job: Job, lm: Any, logits: Any, target: int, photo: Photo) -> None:
    """The top 5 and the explained class, for the page."""
    import torch

    probs = torch.softmax(logits, dim=0)
    top = torch.topk(probs, min(5, len(probs)))
    job.top5 = [{"index": int(i), "name": lm.categories[int(i)], "prob": float(p)} for p, i in zip(top.values, top.indices)]
    req = job.request
    h, w = job.maps[next(iter(job.maps))].raw.shape[-2:]
    job.info = {"target": target, "target_name": lm.categories[target], "target_prob": float(probs[target]),
                "target_rank": int((logits > logits[target]).sum()) + 1, "height": int(h), "width": int(w),
                "model": req.model, "growth": req.growth, "mask": photo.mask_source if job.mask is not None else "",
                "photo": photo.name, "category": photo.category}


def choose_target(asked: int | None, category: str | None, logits: Any, lm: Any) -> int:
    """The asked class; else the best class of the photo's dataset category (a run's "imagenet"
    rule); else the model's top 1."""
    n = len(lm.categories)
    if asked is not None:
        if not 0 <= asked < n:
            raise XcnnError(f"target {asked}: {lm.name} has classes 0 to {n - 1}")
        return asked
    if category is not None and n == 1000:
        from xcnn.data import imagenet_classes

        try:
            allowed = imagenet_classes(category)
        except XcnnError:
            allowed = []
        if allowed:
            return max(allowed, key=lambda c: float(logits[c]))
    return int(logits.argmax())


def explain_group(job: Job, ex: Any, inp: Input, methods: list[str]) -> Any:
    """The maps of ``methods`` in one engine call, into ``job.maps``; returns the engine's Maps."""
    from xcnn import render
    from xcnn.methods import passes

    started = time.perf_counter()

    def tell(label: str, done: int, planned: int) -> None:
        job.progress = f"{', '.join(methods)}: {label} {done} of {planned}"

    job.progress = f"computing {', '.join(methods)}"
    with passes.reporting(tell):
        out = ex.explain(inp.x, targets=inp.target, methods=methods, keys=[inp.key])
    spent = getattr(out, "milliseconds", {})
    for m in methods:
        raw = out.get(m)[0].detach().float().cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(render.picture(m, raw, inp.rgb)).save(buf, format="PNG", compress_level=1)
        ms = float(spent.get(m, (time.perf_counter() - started) * 1000.0))
        numbers = {} if job.mask is None else scores(m, raw, job.mask, inp.rgb)
        job.maps[m] = MapResult(m, ms, buf.getvalue(), raw, numbers)
    return out


def scores(method: str, raw: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> dict[str, Any]:
    """P, chance, lift and the pointing game of one map, through the registry's metrics as a run
    computes them (the same context and arrays)."""
    from xcnn.registry import MetricContext
    from xcnn.registry import metrics as registry_metrics

    table = registry_metrics()
    ctx = MetricContext(method=method, photos=rgb[None])
    out: dict[str, Any] = {}
    for name in SHOWN_METRICS:
        entry = table[name]
        ctx.params = entry.params() if entry.params is not None else None
        value = entry.fn(raw[None], mask[None], ctx)
        values = value if isinstance(value, dict) else {name: value}
        for k, v in values.items():
            number = float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
            if entry.boolean:
                out[k] = None if math.isnan(number) else number == 1.0
            else:
                out[k] = None if math.isnan(number) else number
        ctx.values.update(out)
    return {k: out[k] for k in ("P", "chance", "lift", "pointing_hit")}


def npz_bytes(job: Job) -> bytes:
    """Every map of the job (float32, C×H×W) and the dilated mask, as one .npz."""
    arrays: dict[str, Any] = {m.method: m.raw for m in job.maps.values()}
    if job.mask is not None:
        arrays["mask"] = job.mask
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def numbers(job: Job) -> dict[str, Any]:
    """The small JSON the page offers: the explanation's settings and each map's numbers, by P."""
    rows = sorted(job.summary()["maps"], key=lambda r: -(r.get("P") if r.get("P") is not None else -1.0))
    return {**job.info, "size": job.request.size, "top5": job.top5, "maps": rows}
