"""xcnn's model-check metrics vs Quantus 0.6.0 (and TorchCAM 0.5), side by side on the same maps.

    python benchmarks/metrics_checks.py [--model resnet18] [--photos 4] [--size 224] [--runs 20]
        [--samples 5] [--percentages 20 50 80] [--device cpu] [--only road fc ...]

Both sides get the same model (random weights, eval mode), photos, targets and attributions
(r = Σ_c (∂y/∂x_c)², the energy of the gradient) and the same settings; Quantus is called
with the whole batch, its maps normalised per photo where it normalises. Quantus's ROAD
crashes on 3-channel input and has no LeRF curve, so its side is Quantus's
``noisy_linear_imputation`` called for the same (photo, percentage, curve) plus one batched
prediction: what ROAD with both curves costs in Quantus. TorchCAM's Average Drop includes
its own Grad-CAM pass (it cannot take a map); xcnn's is given the map. Prints seconds and the
ratio reference / xcnn; each side's fastest of ``--reps`` turns.

Measured (resnet18 random weights, 4 photos at 224, 2 busy CPU cores, FC runs 20, samples 5,
ROAD percentages 20/50/80; seconds xcnn vs reference): ROAD 4.9 vs 10.0 (2.0×), Faithfulness
Correlation 8.1 vs 21.0 (2.6×), Average Drop 1.4 vs 2.3 (1.7×, TorchCAM's side includes its
Grad-CAM), Max-Sensitivity 9.1 vs 15.6 (1.7×), Avg-Sensitivity 7.3 vs 9.1 (1.2×), Local
Lipschitz 4.1 vs 9.4 (2.3×). The sensitivities are bound by the maps recomputed on the copies,
which both sides compute with the same function.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20, help="Faithfulness Correlation runs")
    parser.add_argument("--samples", type=int, default=5, help="robustness samples")
    parser.add_argument("--percentages", type=float, nargs="+", default=[20, 50, 80])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--reps", type=int, default=2, help="turns per side; the fastest counts")
    args = parser.parse_args()

    import numpy as np
    import quantus
    import torch
    import torchvision
    from quantus.functions import perturb_func

    from xcnn.metrics import faithfulness as F
    from xcnn.metrics import robustness as R

    warnings.filterwarnings("ignore")
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None, num_classes=1000).eval().to(dev)
    x = torch.randn((args.photos, 3, args.size, args.size), generator=torch.Generator().manual_seed(0)).to(dev)
    t = (torch.arange(args.photos) * 7).to(dev)
    keys = [f"photo{i}" for i in range(args.photos)]
    batch = F.Batch(x, t, keys)

    def energy(xs: torch.Tensor, ts: torch.Tensor, _: Any = None) -> torch.Tensor:
        xs = xs.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xs).gather(1, ts[:, None]).sum(), xs)
        return g.square().sum(1, keepdim=True).detach()

    def q_explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        return energy(torch.as_tensor(inputs, device=dev).float(), torch.as_tensor(targets, device=dev).long()).cpu().numpy()

    r = energy(x, t)  # also the warm-up pass
    xn, tn, rn = x.cpu().numpy(), t.cpu().numpy(), r.cpu().numpy()
    per_axis = {"normalise_axes": [1, 2, 3]}

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch)

    def quantus_road() -> None:
        flat = rn.reshape(len(rn), -1)
        order = np.argsort(-flat, axis=1)
        n = flat.shape[1]
        imputed = []
        for i in range(len(rn)):
            for p in args.percentages:
                k = int(n * p / 100)
                for idx in (order[i, :k], order[i, n - k:]):
                    imputed.append(perturb_func.noisy_linear_imputation(xn[i], idx, noise=0.01))
        with torch.no_grad():
            model(torch.as_tensor(np.stack(imputed)).float().to(dev))

    def torchcam_drop() -> None:
        from functools import partial

        from torchcam.methods import GradCAM
        from torchcam.metrics import ClassificationMetric

        with GradCAM(model, target_layer="layer4", input_shape=(3, args.size, args.size)) as extractor:
            metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
            metric.update(x, class_idx=t.tolist())

    heat = torch.rand((args.photos, 1, 7, 7), generator=torch.Generator().manual_seed(1)).to(dev)
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "road": (lambda: F.road(forward, batch, r, F.RoadSettings(percentages=args.percentages)), quantus_road),
        "fc": (lambda: F.faithfulness_correlation(forward, batch, r, F.CorrelationSettings(nr_runs=args.runs)),
               lambda: quantus.FaithfulnessCorrelation(nr_runs=args.runs, return_aggregate=False, disable_warnings=True,
                                                       normalise_func_kwargs=per_axis)(
                   model=model, x_batch=xn, y_batch=tn, a_batch=rn, device=args.device)),
        "average_drop": (lambda: F.confidence(forward, x, heat, t), torchcam_drop),
        "max_sensitivity": (lambda: R.max_sensitivity(energy, batch, r, R.SensitivitySettings(nr_samples=args.samples)),
                            lambda: quantus.MaxSensitivity(nr_samples=args.samples, disable_warnings=True)(
                                model=model, x_batch=xn, y_batch=tn, a_batch=rn, explain_func=q_explain,
                                device=args.device)),
        "avg_sensitivity": (lambda: R.avg_sensitivity(energy, batch, r, R.SensitivitySettings(nr_samples=args.samples)),
                            lambda: quantus.AvgSensitivity(nr_samples=args.samples, disable_warnings=True)(
                                model=model, x_batch=xn, y_batch=tn, a_batch=rn, explain_func=q_explain,
                                device=args.device)),
        "local_lipschitz": (lambda: R.local_lipschitz_estimate(energy, batch, r, R.LipschitzSettings(nr_samples=args.samples)),
                            lambda: quantus.LocalLipschitzEstimate(nr_samples=args.samples, disable_warnings=True,
                                                                   normalise_func_kwargs=per_axis)(
                                model=model, x_batch=xn, y_batch=tn, a_batch=rn, explain_func=q_explain,
                                device=args.device)),
    }
    print(f"{args.model}, {args.photos} photos at {args.size}, {torch.get_num_threads()} threads, {args.device}; "
          f"FC runs {args.runs}, samples {args.samples}, ROAD percentages {args.percentages}")
    print(f"{'metric':18s} {'xcnn s':>8s} {'reference s':>12s} {'ratio':>6s}")
    for name, (ours, reference) in cases.items():
        if args.only and name not in args.only:
            continue
        times = [float("inf"), float("inf")]
        for _ in range(args.reps):  # the sides take turns, so a busy spell hits both
            for side, fn in enumerate((ours, reference)):
                start = time.perf_counter()
                fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[side] = min(times[side], time.perf_counter() - start)
        print(f"{name:18s} {times[0]:8.2f} {times[1]:12.2f} {times[1] / times[0]:6.2f}", flush=True)


if __name__ == "__main__":
    main()
