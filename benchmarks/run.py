"""Records per second of `xcnn run` against the engine alone on the same inputs.

    python benchmarks/run.py [configs/demo.toml] [--device cpu|cuda] [--save-maps]

The run goes into a fresh temporary folder (no report). The engine-alone pass then feeds the
same batches, already decoded and resized in memory, to `Explainer.explain` and copies the maps
to the CPU (which the run must do too), so the difference is the run's own overhead: image
decoding, mask dilation, metrics, pictures and the fsynced store. Target: under 15 %.
Run by hand, not in the tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xcnn import Explainer  # noqa: E402
from xcnn.experiment import load_config, run  # noqa: E402
from xcnn.experiment import runner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "demo.toml")
    parser.add_argument("--device", default=None, help="override run.device")
    parser.add_argument("--save-maps", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = load_config(args.config)
    if args.device:
        config = dataclasses.replace(config, device=args.device)
    device = runner._device(config.device)

    with tempfile.TemporaryDirectory() as tmp:
        engine_in_run = [0.0]
        real_explain = runner._explain

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            _sync(device)
            t = time.perf_counter()
            result = real_explain(*a, **k)
            _sync(device)
            engine_in_run[0] += time.perf_counter() - t
            return result

        # Warm-up: the first pass over new input shapes pays one-off costs (oneDNN primitive
        # creation per shape, allocator growth) that would otherwise land on whichever of the
        # two measured passes comes first.
        samples, _ = runner._select(config, Path(tmp) / "warm")
        engine_alone(config, samples, device)
        run_times, in_run, engine_times = [], [], []
        for r in range(args.rounds):  # the two take turns, so drift in the machine hits both
            engine_in_run[0] = 0.0
            runner._explain = timed
            t0 = time.perf_counter()
            summary = run(config, Path(tmp) / f"run{r}", save_maps=args.save_maps, report=False)
            run_times.append(time.perf_counter() - t0)
            runner._explain = real_explain
            in_run.append(engine_in_run[0])
            engine_times.append(engine_alone(config, samples, device))
        run_s, engine_s = statistics.median(run_times), statistics.median(engine_times)
        engine_in_run[0] = statistics.median(in_run)

    records = summary.records
    print(f"config: {args.config}  device: {device}  units: {summary.units_total}  records: {records}  "
          f"(median of {args.rounds} alternating rounds)")
    print(f"xcnn run (whole command, incl. model loading and data selection): {run_s:7.2f} s  "
          f"{records / run_s:7.2f} records/s")
    print(f"  of which the engine call (explain + maps to CPU):              {engine_in_run[0]:7.2f} s")
    print(f"engine alone, same batches, inputs already in memory:           {engine_s:7.2f} s  "
          f"{records / engine_s:7.2f} records/s")
    print(f"overhead of the run over the engine alone: {run_s / engine_s - 1:+.1%}  "
          f"(time outside the engine call within the run: {(run_s - engine_in_run[0]) / engine_s:+.1%})")


def engine_alone(config, samples, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Seconds for the engine on exactly the run's batches (decoded and resized beforehand)."""
    total = 0.0
    for spec in config.models:
        lm = runner._load(spec, device)
        with Explainer(lm.model, target_layer=runner._layer(spec, lm)) as ex:
            for size in config.sizes:
                for batch in runner._batches(samples, size, config.batch_size):
                    units = [runner._prepare(s, size, config.growth) for s in batch]
                    x = torch.from_numpy(np.stack([u.photo for u in units])).to(device)
                    x = lm.normalize(x.permute(0, 3, 1, 2).float() / 255.0)
                    _sync(device)
                    t = time.perf_counter()
                    maps = ex.explain(x, targets=None, methods=list(config.methods))
                    _ = {m: maps.get(m).detach().float().cpu().numpy() for m in config.methods}
                    _sync(device)
                    total += time.perf_counter() - t
                    del maps, x
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
