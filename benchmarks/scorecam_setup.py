"""Score-CAM through the public API: what a fresh Explainer per call costs, and the CPU chunk size.

    python benchmarks/scorecam_setup.py [--batch 1] [--threads 2] [--rounds 2] [--reps 1] [--warmup 1]

ResNet-18 (random weights), ``--batch`` photos of ``--size``², the automatic layer (layer4, 512
channels), on the CPU. Variants, each a fresh process per round, taking turns:

- ``xcnn-fresh``: ``xcnn.Explainer(model).explain(x, t, methods=["scorecam"])``, a new
  Explainer every call (its automatic-layer probe included);
- ``xcnn-reused``: one Explainer for all calls;
- ``xcnn-small-passes``: as xcnn-fresh with ``memory_mb`` = ``--small-mb`` (384: passes of 35
  items, near pytorch-grad-cam's 16, against the default 4096's 256);
- ``pytorch-grad-cam``: a new ``ScoreCAM(model, [model.layer4])`` every call, its batch 16.

Every call is timed, warm-up calls too: "first" is a process's first call (new kernels, the
memory probes), the figures are the median of the calls after ``--warmup``. CPU seconds
(process time) are printed beside wall seconds. Also printed: the set-up of a fresh Explainer
on its own (the layer probe and the memory probe, first and cached).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

VARIANTS = ("xcnn-fresh", "xcnn-reused", "xcnn-small-passes", "pytorch-grad-cam")


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import torch
    import torchvision

    import xcnn
    from xcnn import engine
    from xcnn.engine.layers import auto_layer
    from xcnn.methods import sampling

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    targets = [(7 * i + 1) % 1000 for i in range(args.batch)]
    result: dict[str, object] = {"variant": name, "threads": torch.get_num_threads()}

    if name == "setup":  # the probes alone, first and cached
        spans = []
        for _ in range(2):
            start = time.perf_counter()
            auto_layer(model, x[:1])
            middle = time.perf_counter()
            sampling.footprint(model, x)
            spans.append((middle - start, time.perf_counter() - middle))
        result["layer_probe_s"], result["memory_probe_s"] = [list(s) for s in zip(*spans)]
        return result

    once: Callable[[], object]
    if name == "pytorch-grad-cam":
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def once() -> object:
            with ScoreCAM(model, [model.layer4]) as cam:
                return cam(x, [ClassifierOutputTarget(t) for t in targets])
    else:
        memory_mb = args.small_mb if name == "xcnn-small-passes" else engine.DEFAULT_MEMORY_MB
        reused = xcnn.Explainer(model)

        def once() -> object:
            explainer = reused if name == "xcnn-reused" else xcnn.Explainer(model)
            return explainer.explain(x, targets, methods=["scorecam"], memory_mb=memory_mb)["scorecam"]

    walls, cpus = [], []
    for _ in range(args.warmup + args.reps):
        start, cpu = time.perf_counter(), time.process_time()
        once()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    result.update(first=walls[0], seconds=walls[args.warmup:], cpu_seconds=cpus[args.warmup:])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1, help="photos a call")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small-mb", type=int, default=384, help="memory_mb of xcnn-small-passes")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, taking turns")
    parser.add_argument("--reps", type=int, default=1, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=1, help="calls first, timed apart ('first')")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return

    env = {**os.environ, "TQDM_DISABLE": "1"}  # pytorch-grad-cam's progress bars

    def run(name: str) -> dict:
        cmd = [sys.executable, __file__, "--variant", name,
               *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("variant", "variants"))]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    setup = run("setup")
    names = [v for v in args.variants.split(",") if v]
    info: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            info[name].append(run(name))

    def median(name: str, field: str) -> float:
        return statistics.median(s for r in info[name] for s in r[field])

    print(f"Score-CAM, ResNet-18 layer4, {args.batch} photo(s) {args.size}², CPU, {setup['threads']} threads, "
          f"load average {os.getloadavg()[0]:.1f}; median of {args.rounds * args.reps} calls after {args.warmup} "
          f"warm-up call(s) in each of {args.rounds} processes")
    print(f"set-up of a fresh Explainer: layer probe {setup['layer_probe_s'][0]:.3f} s first, "
          f"{setup['layer_probe_s'][1]:.4f} s cached; memory probe {setup['memory_probe_s'][0]:.3f} s first, "
          f"{setup['memory_probe_s'][1]:.4f} s cached")
    ref = "pytorch-grad-cam" if "pytorch-grad-cam" in names else None
    print(f"  {'':18s} {'first s':>8s} {'wall s':>8s} {'CPU s':>8s}" + ("  grad-cam / this (wall, CPU)" if ref else ""))
    for name in names:
        first = statistics.median(r["first"] for r in info[name])
        line = f"  {name:18s} {first:8.2f} {median(name, 'seconds'):8.2f} {median(name, 'cpu_seconds'):8.2f}"
        if ref:
            line += (f"  {median(ref, 'seconds') / median(name, 'seconds'):.2f}×, "
                     f"{median(ref, 'cpu_seconds') / median(name, 'cpu_seconds'):.2f}×")
        print(line)


if __name__ == "__main__":
    main()
