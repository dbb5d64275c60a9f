"""Records per second of `xcnn run` against the engine alone, or the Ray backend against the local one.

    python benchmarks/run.py [configs/demo.toml] [--device cpu|cuda] [--save-maps] [--rounds 3]
    python benchmarks/run.py [configs/demo.toml] --ray [--rounds 3] [--no-checks]
    python benchmarks/run.py [configs/demo.toml] --checks [--rounds 1]

Default: the run goes into a fresh temporary folder (no report). The engine-alone pass then
feeds the same batches, already decoded and resized in memory, to `Explainer.explain` and copies
the maps to the CPU (which the run must do too), so the difference is the run's own overhead:
image decoding, mask dilation, metrics, pictures and the fsynced store. Target: under 15 %.

--ray: the same config run by the local backend and by the Ray backend on a local Ray started
once beforehand (its start-up is printed apart: a cluster is started once for many runs), taking
turns. The Ray run pays what joining a running cluster costs: actors started, models loaded in
them, batches and results through the object store. Target: Ray at 85 % of local or more. Ray
listens on every interface and probes a public resolver, so this mode re-runs itself inside a
network namespace of its own (`unshare -n`, loopback only; needs root or user namespaces).

--checks: what the validity checks cost. The config run three ways, taking turns: without
[checks], with its [checks] as written, and with every check on at the default sizes. Target:
the checks add at most 4× the plain run's time (the demo's settings).

Run by hand, not in the tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from xcnn import Explainer  # noqa: E402
from xcnn.experiment import load_config, run  # noqa: E402
from xcnn.experiment.config import Checks  # noqa: E402
from xcnn.experiment import plan as plan_module  # noqa: E402
from xcnn.experiment import runner  # noqa: E402
from xcnn.experiment import worker as worker_module  # noqa: E402

INSIDE = "XCNN_BENCH_IN_NETNS"  # set in the re-run inside the network namespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "demo.toml")
    parser.add_argument("--device", default=None, help="override run.device")
    parser.add_argument("--save-maps", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--ray", action="store_true", help="compare the Ray backend with the local one instead")
    parser.add_argument("--no-checks", action="store_true", help="leave the config's [checks] out (records only)")
    parser.add_argument("--checks", action="store_true", help="time the run without checks, as configured, and with defaults")
    parser.add_argument("--no-defaults", action="store_true", help="with --checks: skip the every-check-at-defaults run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = load_config(args.config)
    if args.device:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, device=args.device))
    if args.no_checks:
        config = dataclasses.replace(config, checks=Checks())
    if args.ray:
        if not os.environ.get(INSIDE):
            sys.exit(_in_network_namespace())
        ray_vs_local(config, args)
    elif args.checks:
        checks_vs_plain(config, args)
    else:
        run_vs_engine(config, args)


# --- the run against the engine alone ---------------------------------------------------------

def run_vs_engine(config: Any, args: argparse.Namespace) -> None:
    device = runner.resolve_device(config.run.device)
    with tempfile.TemporaryDirectory() as tmp:
        engine_in_run = [0.0]
        real_explain = worker_module.explain_units

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
        samples, _ = runner._select(config, runner._dataset(config, Path(tmp) / "warm"))
        engine_alone(config, samples, device)
        run_times, in_run, engine_times = [], [], []
        for r in range(args.rounds):  # the two take turns, so drift in the machine hits both
            engine_in_run[0] = 0.0
            worker_module.explain_units = timed
            t0 = time.perf_counter()
            summary = run(config, Path(tmp) / f"run{r}", save_maps=args.save_maps)
            run_times.append(time.perf_counter() - t0)
            worker_module.explain_units = real_explain
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


def engine_alone(config: Any, samples: list[Any], device: torch.device) -> float:
    """Seconds for the engine on exactly the run's batches (decoded and resized beforehand)."""
    total = 0.0
    prepare = worker_module.Worker(config, device)._prepare
    for spec in config.models:
        lm = worker_module.load_model(spec, device)
        with Explainer(lm.model, target_layer=spec.gradcam_layer) as ex:
            for size in config.run.sizes:
                for batch in plan_module._groups(samples, size, config.run.batch_size):
                    units = [prepare(s, size, {}) for s in batch]
                    x = torch.from_numpy(np.stack([u.photo for u in units])).to(device)
                    x = lm.normalize(x.permute(0, 3, 1, 2).float() / 255.0)
                    _sync(device)
                    t = time.perf_counter()
                    maps = ex.explain(x, targets=None, methods=list(config.run.methods))
                    _ = {m: maps.get(m).detach().float().cpu().numpy() for m in config.run.methods}
                    _sync(device)
                    total += time.perf_counter() - t
                    del maps, x
    return total


# --- what the checks cost ---------------------------------------------------------------------

def checks_vs_plain(config: Any, args: argparse.Namespace) -> None:
    from xcnn import registry

    others = tuple((name, None if c.params is None else c.params()) for name, c in registry.checks().items()
                   if name not in ("faithfulness", "randomisation", "dependence"))
    every = Checks(baselines=True, faithfulness=True, randomisation=True, dependence=True, others=others)
    variants = {"no checks": dataclasses.replace(config, checks=Checks()),
                "checks as configured": config}
    if not args.no_defaults:
        variants["every check, default sizes"] = dataclasses.replace(config, checks=every)
    times: dict[str, list[float]] = {name: [] for name in variants}
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shared = {name: _shared_demo(c, Path(tmp)) for name, c in variants.items()}
        run(shared["no checks"], Path(tmp) / "warm")  # builds the demo set, fills the page cache
        for r in range(args.rounds):  # taking turns, so drift in a shared machine hits all three
            for name, c in shared.items():
                out = Path(tmp) / f"{r}-{len(times[name])}-{name.split()[0]}"
                t = time.perf_counter()
                run(c, out)
                times[name].append(time.perf_counter() - t)
                checks = out / "checks.jsonl"
                rows[name] = sum(1 for _ in checks.open()) if checks.exists() else 0
    plain = statistics.median(times["no checks"])
    print(f"config: {args.config}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"(median of {args.rounds} round(s))")
    for name, ts in times.items():
        t = statistics.median(ts)
        extra = f"checks add {(t - plain) / plain:4.2f}× the plain run (target ≤ 4)" if t != plain else ""
        print(f"{name:28s} {t:7.1f} s  {rows[name]:6d} check rows  {extra}")


# --- the Ray backend against the local one ----------------------------------------------------

def _in_network_namespace() -> int:
    """This command again, inside a new network namespace with only loopback up."""
    env = {**os.environ, INSIDE: "1", "RAY_DISABLE_USAGE_STATS": "1"}
    script = 'ip link set lo up && exec "$0" "$@"'
    try:
        return subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv], env=env).returncode
    except FileNotFoundError:
        sys.exit("--ray needs unshare (util-linux) and ip (iproute2): Ray is kept off the network")


def ray_vs_local(config: Any, args: argparse.Namespace) -> None:
    import ray

    with tempfile.TemporaryDirectory(prefix="xb", dir="/tmp") as tmp:
        config = _shared_demo(config, Path(tmp))
        run(config, Path(tmp) / "warm")  # builds the demo set, fills the page cache
        t0 = time.perf_counter()
        # as `xcnn run --ray` starts it (workers at niceness 0, not Ray's 15: see backends/ray.py)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=str(Path(tmp) / "ray"),
                 _system_config={"worker_niceness": 0})
        start_s = time.perf_counter() - t0
        # joins the Ray started above
        on_ray = dataclasses.replace(config, run=dataclasses.replace(config.run, backend="ray", address=None))
        local_s, ray_s, workers = [], [], []
        try:
            for r in range(args.rounds):  # taking turns, so drift in a shared machine hits both
                t = time.perf_counter()
                summary = run(config, Path(tmp) / f"local{r}")
                local_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                on = run(on_ray, Path(tmp) / f"ray{r}")
                ray_s.append(time.perf_counter() - t)
                workers.append(on.workers)
                assert on.records == summary.records, (on.records, summary.records)
        finally:
            ray.shutdown()
    records = summary.records
    loc, ray_med = statistics.median(local_s), statistics.median(ray_s)
    checks = "off" if args.no_checks else "as configured"
    print(f"config: {args.config}  checks: {checks}  units: {summary.units_total}  records: {records}  "
          f"CPUs: {os.cpu_count()}  (median of {args.rounds} alternating rounds)")
    print(f"local backend (one process, torch threads {torch.get_num_threads()}): {loc:7.2f} s  "
          f"{records / loc:7.2f} records/s")
    print(f"Ray backend (local Ray, {len(workers[-1])} actor(s)):        {ray_med:7.2f} s  "
          f"{records / ray_med:7.2f} records/s")
    print(f"Ray / local: {loc / ray_med:.1%} of the local records/s (target 85 %); Ray's own start, "
          f"paid once per cluster: {start_s:.1f} s")
    print("per worker (units/s while computing): " + ", ".join(f"{w} {u:.2f}" for w, u in workers[-1].items()))


def _shared_demo(config: Any, tmp: Path) -> Any:
    """The demo set built once for every run of the benchmark, not once per run folder."""
    if not config.data.demo:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, demo_dir=str(tmp / "demo-data")))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
