"""All five maps: xcnn vs five Captum calls vs the autograd floor, side by side in one run.

    python benchmarks/engine.py [--model resnet50] [--batch 8] [--size 224] [--reps 3]

Each variant runs in its own fresh process (so peak memory is its own), the variants take
turns, and each figure is the median of the repetitions. The floor is what no implementation
can beat: one forward pass and three input-only backward passes of plain autograd.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("floor", "xcnn", "captum")


def run_variant(variant: str, model_name: str, batch: int, size: int, reps: int) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    targets = torch.arange(batch) * 7
    layer = {"resnet50": "layer4", "vgg16": "features", "densenet121": "features"}.get(model_name, "features")

    if variant == "floor":

        def once() -> None:
            xr = x.clone().requires_grad_(True)
            score = model(xr).gather(1, targets[:, None]).sum()
            for i in range(3):
                torch.autograd.grad(score, xr, retain_graph=i < 2)

    elif variant == "xcnn":
        from xcnn import Explainer

        ex = Explainer(model, target_layer=layer)

        def once() -> None:
            ex.explain(x, targets)

    else:
        from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency

        module = dict(model.named_modules())[layer]

        def once() -> None:
            Saliency(model).attribute(x, target=targets, abs=False)
            Deconvolution(model).attribute(x, target=targets)
            GuidedBackprop(model).attribute(x, target=targets)
            cam = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True)
            LayerAttribution.interpolate(cam, (size, size), interpolate_mode="bilinear")
            GuidedGradCam(model, module).attribute(x, target=targets, interpolate_mode="bilinear")

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    once()  # warm-up, and the peak-memory measurement
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "seconds": times, "peak_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, taking turns")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model, args.batch, args.size, args.reps)))
        return

    import torch

    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", v, "--model", args.model, "--batch", str(args.batch),
                   "--size", str(args.size), "--reps", str(args.reps)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            results[v] += out["seconds"]
            peaks[v].append(out["peak_mib"])
    med = {v: statistics.median(t) for v, t in results.items()}
    print(f"{args.model}, batch {args.batch}, {args.size}×{args.size}, CPU ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}; median of {len(results['xcnn'])} runs")
    print(f"{'variant':34s} {'seconds':>8s} {'peak MiB':>9s}")
    labels = {"floor": "floor (1 fwd + 3 input-only bwd)", "xcnn": "xcnn, all five maps", "captum": "Captum, five separate calls"}
    for v in VARIANTS:
        print(f"{labels[v]:34s} {med[v]:8.2f} {max(peaks[v]):9.0f}")
    print(f"xcnn / floor   = {med['xcnn'] / med['floor']:.2f}  (target ≤ 1.25)")
    print(f"captum / xcnn  = {med['captum'] / med['xcnn']:.2f}  (target ≥ 2)")


if __name__ == "__main__":
    main()
