"""Quantus's metrics in xcnn vs Quantus 0.6.0 itself, on the same maps, side by side.

    python benchmarks/metrics.py [--maps 16] [--size 224] [--reps 5] [--only top_k_intersection,auc]

Per-map metrics (``PER_MAP``): ``--maps`` maps at ``--size``² (half gradient-like B×3×H×W noise
under an envelope, half Grad-CAM-like smooth heat maps), elliptic masks. Quantus gets a = r =
Σ_c m_c² (B×1×H×W), the relevance xcnn's metrics read, and is timed two ways: one sample at a
time (the call that equals xcnn: its normalise_by_max runs over the whole batch otherwise) and on
the whole batch at once (its fastest call). xcnn is timed as the worker calls it, one map at a
time with a fresh MetricContext per metric (so each pays its own sort, if it needs one), and as
a batch. "together" is what a record costs: the six new metrics sharing one context, beside
``scores`` (P, chance, pointing game, RMA) that every record already pays, and beside the maps'
time measured in the same process (``--map-model``, random weights, the eleven single-pass
methods on a batch of 4 at ``--size``, each map's share of the batch's passes, as the README's
ms/map): the budget is 10 % of it. Every figure is the
median of ``--reps`` timed repetitions after one untimed one; the largest difference from
Quantus (one sample at a time) is printed beside each, a check that both compute the same.

A section per kind of comparison: add model checks as another dict and another function, and
call it from main().
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PerMap:
    """One per-map metric: xcnn's registry name and the Quantus class (with arguments) it equals."""

    quantus_class: str
    kwargs: tuple[tuple[str, Any], ...] = ()


PER_MAP: dict[str, PerMap] = {
    "top_k_intersection": PerMap("TopKIntersection", (("k", 1000),)),
    "relevance_rank_accuracy": PerMap("RelevanceRankAccuracy"),
    "auc": PerMap("AUC"),
    "sparseness": PerMap("Sparseness"),
    "complexity": PerMap("Complexity"),
    "effective_complexity": PerMap("EffectiveComplexity", (("eps", 1e-5),)),
}


def _median_seconds(fn: Callable[[], Any], reps: int) -> float:
    fn()  # untimed: first-call costs (imports, caches)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _maps(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """n maps (float32, as the worker hands them to the metrics) and their B×H×W masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = []
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        env = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
        if i % 2 == 0:  # gradient-like: heavy-tailed noise under an envelope
            maps.append((rng.laplace(size=(1, 3, size, size)) * (0.05 + env)).astype(np.float32))
        else:  # Grad-CAM-like: a smooth blob in [0, 1]
            blob = env * (1 + 0.01 * rng.random((size, size)))
            maps.append((blob / blob.max())[None, None].astype(np.float32))
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1)) * size
    ry, rx = rng.uniform(0.15, 0.35, (2, n, 1, 1)) * size
    iy, ix = np.mgrid[0:size, 0:size]
    masks = ((iy - cy) / ry) ** 2 + ((ix - cx) / rx) ** 2 <= 1
    return maps, masks


def per_map(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each per-map metric of PER_MAP, xcnn against Quantus: seconds per map and the ratios."""
    import quantus
    import torch

    from xcnn import registry
    from xcnn.metrics.localisation import relevance, scores
    from xcnn.registry import MetricContext

    names = [n for n in PER_MAP if not args.only or n in args.only.split(",")]
    maps, masks = _maps(args.maps, args.size)
    n = len(maps)
    r = np.concatenate([relevance(m) for m in maps]).astype(np.float64)[:, None]  # B×1×H×W, as Quantus gets it
    s = masks[:, None].astype(np.float32)
    x = np.zeros((n, 1, args.size, args.size), np.float32)
    y = np.zeros(n, dtype=np.int64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(args.size * args.size, 2))  # required, unused
    entries = registry.metrics()
    heat = [m for m in maps if m.shape[1] == 1]
    signed = [m for m in maps if m.shape[1] == 3]
    batches = [(np.concatenate(group), masks[[i for i, m in enumerate(maps) if m.shape[1] == c]])
               for group, c in ((signed, 3), (heat, 1)) if group]

    def quantus_call(name: str, lo: int, hi: int) -> np.ndarray:
        spec = PER_MAP[name]
        metric = getattr(quantus, spec.quantus_class)(disable_warnings=True, **dict(spec.kwargs))
        return np.asarray(metric(model=model, x_batch=x[lo:hi], y_batch=y[lo:hi], a_batch=r[lo:hi].copy(),
                                 s_batch=s[lo:hi], channel_first=True, device="cpu"), dtype=np.float64)

    def xcnn_one(name: str, i: int) -> np.ndarray:
        return np.asarray(entries[name].fn(maps[i], masks[i:i + 1], MetricContext(method="bench")))

    def xcnn_each(name: str) -> None:
        for i in range(n):
            xcnn_one(name, i)

    def xcnn_batched(name: str) -> None:
        for m, k in batches:
            entries[name].fn(m, k, MetricContext(method="bench"))

    def quantus_each(name: str) -> None:
        for i in range(n):
            quantus_call(name, i, i + 1)

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            ours = np.concatenate([xcnn_one(name, i) for i in range(n)])
            ref = np.concatenate([quantus_call(name, i, i + 1) for i in range(n)])
            t_one = _median_seconds(functools.partial(xcnn_each, name), args.reps) / n
            t_batch = _median_seconds(functools.partial(xcnn_batched, name), args.reps) / n
            q_one = _median_seconds(functools.partial(quantus_each, name), args.reps) / n
            q_batch = _median_seconds(functools.partial(quantus_call, name, 0, n), args.reps) / n
            rows.append({"metric": name, "quantus": PER_MAP[name].quantus_class, "xcnn_ms": 1e3 * t_one,
                         "xcnn_batch_ms": 1e3 * t_batch, "quantus_ms": 1e3 * q_one, "quantus_batch_ms": 1e3 * q_batch,
                         "max_diff": float(np.nanmax(np.abs(ours - ref)))})

        def together() -> None:
            for i in range(n):
                ctx = MetricContext(method="bench")
                for name in PER_MAP:
                    entries[name].fn(maps[i], masks[i:i + 1], ctx)

        t_all = _median_seconds(together, args.reps) / n
        t_scores = _median_seconds(lambda: [scores(maps[i], masks[i:i + 1]) for i in range(n)], args.reps) / n
    rows.append({"metric": "together (six, one context)", "xcnn_ms": 1e3 * t_all})
    rows.append({"metric": "scores (P, chance, pointing, RMA)", "xcnn_ms": 1e3 * t_scores})
    return rows


def maps_time(args: argparse.Namespace) -> float:
    """Seconds per map of xcnn's eleven single-pass methods on ``--map-model`` (random weights)."""
    import torch
    import torchvision

    from xcnn import Explainer
    from xcnn.methods.registry import SINGLE_PASS

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.map_model, weights=None).eval()
    x = torch.randn(4, 3, args.size, args.size)
    targets = torch.arange(4) * 7
    ex = Explainer(model, target_layer=args.map_layer or "auto")
    return _median_seconds(lambda: ex.explain(x, targets, methods=SINGLE_PASS), args.reps) / (4 * len(SINGLE_PASS))


def print_per_map(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nPer-map metrics: {args.maps} maps at {args.size}×{args.size} (half 3-channel gradient-like, "
          f"half Grad-CAM-like), median of {args.reps}; ms per map")
    print("| metric | Quantus class | xcnn, one map a call | xcnn, batched | Quantus, one a call | "
          "Quantus, batched | speed-up (one / batched) | max diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "quantus_ms" not in row:
            print(f"| {row['metric']} | | {row['xcnn_ms']:.3f} | | | | | |")
            continue
        print(f"| {row['metric']} | {row['quantus']} | {row['xcnn_ms']:.3f} | {row['xcnn_batch_ms']:.3f} | "
              f"{row['quantus_ms']:.3f} | {row['quantus_batch_ms']:.3f} | "
              f"{row['quantus_ms'] / row['xcnn_ms']:.1f}× / {row['quantus_batch_ms'] / row['xcnn_batch_ms']:.1f}× | "
              f"{row['max_diff']:.1e} |")
    if args.maps_ms:
        together = next(row["xcnn_ms"] for row in rows if row["metric"].startswith("together"))
        print(f"\nMaps' time, {args.map_model} at {args.size}×{args.size} (random weights, eleven single-pass "
              f"methods, batch 4): {args.maps_ms:.1f} ms per map; the six new metrics together add "
              f"{together:.2f} ms per map = {100 * together / args.maps_ms:.1f} % (budget 10 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated per-map metric names (default: all)")
    parser.add_argument("--map-model", default="mobilenet_v2", help="torchvision model of the maps' time ('' skips it)")
    parser.add_argument("--map-layer", default="features.18", help="its Grad-CAM layer ('' for auto)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, NumPy {np.__version__}")
    args.maps_ms = 1e3 * maps_time(args) if args.map_model else 0.0
    print_per_map(per_map(args), args)


if __name__ == "__main__":
    main()
