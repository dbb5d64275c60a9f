"""xcnn vs five Captum calls vs the autograd floor, side by side in one run.

    python benchmarks/engine.py [--model resnet50] [--batch 8] [--size 224] [--reps 3] [--variants ...]
                                [--compare-src OLD_CHECKOUT/src]

Variants: the floor, xcnn's five default maps, xcnn's eleven single-pass maps (the five plus
Input × Gradient, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM) and Captum's five
separate calls. Each variant runs in its own fresh process (so peak memory is its own), the
variants take turns, and each figure is the median of the repetitions. The floor is what no
implementation can beat: one forward pass and three input-only backward passes of plain
autograd — every single-pass map needs no more passes than that. ``--compare-src`` also times
the eleven single-pass maps of another checkout (e.g. xcnn 0.2's ``src``), turn about with this
one's, and prints the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("floor", "xcnn", "xcnn_single", "captum")


def run_variant(variant: str, model_name: str, batch: int, size: int, reps: int, device: str) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    targets = torch.arange(batch, device=device) * 7
    layer = {"resnet50": "layer4", "vgg16": "features", "densenet121": "features"}.get(model_name)
    if layer is None:
        from xcnn.engine import find_target_layer

        layer = find_target_layer(model, x[:1])

    if variant == "floor":

        def once() -> None:
            xr = x.clone().requires_grad_(True)
            score = model(xr).gather(1, targets[:, None]).sum()
            for i in range(3):
                torch.autograd.grad(score, xr, retain_graph=i < 2)

    elif variant in ("xcnn", "xcnn_single"):
        from xcnn import Explainer
        from xcnn.methods.registry import DEFAULT_METHODS, SINGLE_PASS

        ex = Explainer(model, target_layer=layer)
        methods = DEFAULT_METHODS if variant == "xcnn" else SINGLE_PASS

        def once() -> None:
            ex.explain(x, targets, methods=methods)

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

    cuda = torch.device(device).type == "cuda"

    def timed() -> float:
        start = time.perf_counter()
        once()
        if cuda:  # the work, not its queueing
            torch.cuda.synchronize()
        return time.perf_counter() - start

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed()  # warm-up, and the peak-memory measurement
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    if cuda:
        peak = torch.cuda.max_memory_allocated() // 1024  # KiB, as ru_maxrss
    times = [timed() for _ in range(reps)]
    return {"variant": variant, "seconds": times, "peak_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, taking turns")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all); the floor always runs")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu); peak memory is the GPU's on cuda")
    parser.add_argument("--compare-src", metavar="DIR", help="another checkout's src folder: its eleven single-pass "
                        "maps are timed beside this one's (default: none)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model, args.batch, args.size, args.reps, args.device)))
        return

    import torch

    variants = [v for v in VARIANTS if v == "floor" or v in args.variants.split(",")]
    if args.compare_src:
        variants.append("xcnn_single_other")
    results: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            other = v == "xcnn_single_other"
            cmd = [sys.executable, __file__, "--variant", "xcnn_single" if other else v, "--model", args.model,
                   "--batch", str(args.batch), "--size", str(args.size), "--reps", str(args.reps), "--device",
                   args.device]
            env = {**os.environ, "PYTHONPATH": args.compare_src} if other else None  # that checkout's xcnn
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            out = json.loads(done.stdout.strip().splitlines()[-1])
            results[v] += out["seconds"]
            peaks[v].append(out["peak_mib"])
    med = {v: statistics.median(t) for v, t in results.items()}
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"{args.model}, batch {args.batch}, {args.size}×{args.size}, {where}, torch {torch.__version__}; "
          f"median of {len(results['floor'])} runs")
    labels = {"floor": "floor (1 fwd + 3 input-only bwd)", "xcnn": "xcnn, five default maps",
              "xcnn_single": "xcnn, eleven single-pass maps", "captum": "Captum, five separate calls",
              "xcnn_single_other": "the same, --compare-src's xcnn"}
    print(f"{'variant':34s} {'seconds':>8s} {'/ floor':>8s} {'peak MiB':>9s}")
    for v in variants:
        print(f"{labels[v]:34s} {med[v]:8.3f} {med[v] / med['floor']:8.2f} {max(peaks[v]):9.0f}")
    targets = {"xcnn": "≤ 1.25", "xcnn_single": "≤ 1.10"}
    for v, target in targets.items():
        if v in med:
            print(f"{v} / floor = {med[v] / med['floor']:.2f}  (target {target})")
    if "xcnn_single_other" in med and "xcnn_single" in med:
        print(f"this / other = {med['xcnn_single'] / med['xcnn_single_other']:.3f}  (eleven single-pass maps; "
              "target ≤ 1.03 against 0.2)")
    if "captum" in med and "xcnn" in med:
        print(f"captum / xcnn  = {med['captum'] / med['xcnn']:.2f}  (target ≥ 2)")


if __name__ == "__main__":
    main()
