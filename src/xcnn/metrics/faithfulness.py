"""Deletion and insertion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421).

Does the map point at what the model uses? Pixels are taken in the map's order of per-pixel
energy Σ_c I² (descending); pixels of equal energy — the flat zeros of a CAM, or every pixel
of a constant or all-zero map — in a random order drawn from a generator seeded by
(seed, key), so a map's curve never depends on the batch it was computed in.

- deletion: the top fraction k/steps (k = 0..steps) of the pixels is set to 0 in the model's
  input space (the dataset mean, for a normalised input); a faithful map makes the target's
  probability fall fast: low area is good.
- insertion: starting from the photo blurred per channel in the model's input space (Gaussian,
  σ = 5 % of the longer side, ``scipy.ndimage.gaussian_filter`` with mode "reflect"), the top
  fraction of the original pixels is put back: high area is good.

The score is the area under the target's softmax probability over the fraction, by the
trapezoid rule over the steps + 1 points k/steps on [0, 1]. The number of pixels at step k is
⌊k·N/steps⌋ of the N = H·W pixels. The steps − 1 inner images of one curve go through the
model as one batch, without gradient, in eval mode (the model's flags are restored afterwards);
the end points every curve of a photo shares (the photo, the photo all deleted, the blurred
photo) go through once per photo, and maps that order the pixels alike share their curves.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics.localisation import ArrayLike, _as_numpy

if TYPE_CHECKING:
    import torch
    from torch import nn

BLUR_SIGMA = 0.05  # fraction of the longer side
# B×C×H×W model inputs -> B×classes logits (eval mode; the caller's own chunking, device and dtype)
Forward = Callable[["torch.Tensor"], "torch.Tensor"]


def key_seed(seed: int, key: str) -> int:
    """A 63-bit seed from (seed, key), stable across processes and platforms (unlike ``hash``)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def pixel_order(maps: ArrayLike, seed: int = 0, keys: Sequence[str] | None = None) -> np.ndarray:
    """B×N int64 (N = H·W, row-major pixel indices): pixels by descending energy Σ_c I²,
    ties in a random order from a generator seeded by ``key_seed(seed, keys[i])``.

    ``keys=None`` keys image i by ``str(i)``; pass the photos' own keys (e.g. image id) so an
    order does not depend on where a map sits in its batch.
    """
    m = _as_numpy(maps)
    if m.ndim != 4:
        raise XcnnError(f"maps must be B×C×H×W, got shape {tuple(m.shape)}")
    b = m.shape[0]
    keys = _keys(keys, b)
    energy = np.square(m, dtype=np.float64).sum(axis=1).reshape(b, -1)
    out = np.empty(energy.shape, dtype=np.int64)
    for i in range(b):
        tiebreak = np.random.default_rng(key_seed(seed, keys[i])).random(energy.shape[1])
        out[i] = np.lexsort((tiebreak, -energy[i]))  # last key is the primary one
    return out


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each channel of B×C×H×W ``images`` blurred by a Gaussian of σ = ``sigma`` × max(H, W)
    pixels (``scipy.ndimage.gaussian_filter``, mode "reflect", truncated at 4σ); same dtype
    and device. The start of an insertion curve."""
    import torch

    h, w = images.shape[-2:]
    s = sigma * max(h, w)
    x = images.detach().to("cpu", torch.float64).numpy()
    from scipy import ndimage

    out = ndimage.gaussian_filter(x, sigma=(0, 0, s, s), mode="reflect")
    return torch.from_numpy(out).to(images.device, images.dtype)


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area of B×(steps+1) curves sampled at k/steps on [0, 1]; float64 [B]."""
    c = np.asarray(curves, dtype=np.float64)
    steps = c.shape[-1] - 1
    return (c.sum(axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / steps


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: ArrayLike | Mapping[str, ArrayLike],
    targets: torch.Tensor | Sequence[int],
    *,
    steps: int = 20,
    seed: int = 0,
    keys: Sequence[str] | None = None,
    blur_sigma: float = BLUR_SIGMA,
    curves_per_pass: int = 2,
) -> dict[str, Any]:
    """Deletion and insertion curves of B maps.

    ``images``: B×3×H×W in the model's input space (normalised); ``maps``: B×C×H×W (any C,
    NumPy or torch), or a mapping name -> B×C×H×W for several methods' maps of the same
    images; ``targets``: B class indices. ``keys``: one string per image seeding the order of
    tied pixels (see ``pixel_order``). ``curves_per_pass``: how many whole curves (of
    steps − 1 inner points each) share one forward pass — memory only, never a result.

    Every curve of a photo starts or ends at one of three images that do not depend on the map
    (the photo, the photo all deleted, the photo blurred): they go through the model once per
    photo. Maps that order the pixels alike (a CAM and its rescaled twin) share their curves.

    Returns float64 arrays: ``deletion_auc`` and ``insertion_auc`` [B], ``deletion_curve`` and
    ``insertion_curve`` B×(steps+1) — the target's softmax probability after k/steps of the
    pixels were deleted / inserted, k = 0..steps; for a mapping, one such dict per name.
    """
    import torch

    if images.dim() != 4:
        raise XcnnError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    named = isinstance(maps, Mapping)
    table = {k: _as_numpy(v) for k, v in maps.items()} if isinstance(maps, Mapping) else {"": _as_numpy(maps)}
    for m in table.values():
        if m.ndim != 4 or m.shape[0] != b or m.shape[2:] != (h, w):
            raise XcnnError(f"maps must be B×C×H×W matching images {tuple(images.shape)}, got {tuple(m.shape)}")
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if target.numel() != b:
        raise XcnnError(f"need one target per image: {b} images, {target.numel()} targets")
    if steps < 1 or curves_per_pass < 1:
        raise XcnnError(f"steps and curves_per_pass must be at least 1, got {steps} and {curves_per_pass}")

    n = h * w
    counts = np.arange(steps + 1, dtype=np.int64) * n // steps  # pixels changed at step k
    # One curve pair per distinct (photo, pixel order); slot[name][i] is the pair of map i.
    unique: list[tuple[int, np.ndarray]] = []
    seen: dict[tuple[int, bytes], int] = {}
    slot: dict[str, list[int]] = {}
    for name, m in table.items():
        slot[name] = []
        for i, order in enumerate(pixel_order(m, seed, keys)):
            digest = hashlib.blake2b(order.tobytes(), digest_size=16).digest()
            if (i, digest) not in seen:
                seen[(i, digest)] = len(unique)
                unique.append((i, order))
            slot[name].append(seen[(i, digest)])

    x = images.detach().contiguous()  # a permuted (channels-last) photo would make mixed-layout batches: slow
    blurred = blur(x, blur_sigma)
    curves = np.empty((len(unique), 2, steps + 1), dtype=np.float64)
    tally = Tally("deletion/insertion passes", 3 * b + 2 * len(unique) * (steps - 1))
    with torch.no_grad(), _eval_mode(model):
        ends = _probabilities(model, torch.cat([x, torch.zeros_like(x), blurred]), target.repeat(3),
                              curves_per_pass * (steps + 1), tally)
        photo, deleted, start = ends[:b], ends[b:2 * b], ends[2 * b:]
        for j, (i, _) in enumerate(unique):
            curves[j, 0, 0], curves[j, 0, -1] = photo[i], deleted[i]
            curves[j, 1, 0], curves[j, 1, -1] = start[i], photo[i]

        def inner_points() -> Iterator[tuple[int, int, torch.Tensor]]:
            # (curve pair, 0 = deletion | 1 = insertion, the steps − 1 inputs between the ends)
            for j, (i, order) in enumerate(unique):
                rank = np.empty(n, dtype=np.int64)
                rank[order] = np.arange(n)
                top = torch.from_numpy(rank[None, :] < counts[1:-1, None]).to(x.device).view(steps - 1, 1, h, w)
                yield j, 0, torch.where(top, torch.zeros_like(x[i]), x[i])
                yield j, 1, torch.where(top, x[i], blurred[i])

        if steps > 1:
            for group in _chunks(inner_points(), curves_per_pass):
                prob = _probabilities(model, torch.cat([inputs for _, _, inputs in group]),
                                      torch.cat([target[unique[j][0]].repeat(steps - 1) for j, _, _ in group]),
                                      len(group) * (steps - 1), tally)
                for g, (j, which, _) in enumerate(group):
                    curves[j, which, 1:-1] = prob[g * (steps - 1):(g + 1) * (steps - 1)]

    def result(index: list[int]) -> dict[str, np.ndarray]:
        c = curves[index]
        return {"deletion_auc": auc(c[:, 0]), "insertion_auc": auc(c[:, 1]),
                "deletion_curve": c[:, 0], "insertion_curve": c[:, 1]}

    out = {name: result(index) for name, index in slot.items()}
    return out if named else out[""]


def _probabilities(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, per_pass: int,
                   tally: Tally) -> np.ndarray:
    """The target's softmax probability for each input, ``per_pass`` inputs per forward pass."""
    import torch

    out = []
    for start in range(0, inputs.shape[0], per_pass):
        batch = inputs[start:start + per_pass]
        if batch.device.type == "cpu":
            # CPU convolutions run 1.4–1.6× faster on a channels-last batch (MobileNetV2,
            # EfficientNet-Lite0, 38 images at 224, 2 cores) than on a contiguous one; logits agree to 1e-5
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits = model(batch)
        if logits.dim() != 2:
            raise XcnnError(f"the model must return B×classes logits, got shape {tuple(logits.shape)}")
        prob = torch.softmax(logits.float(), dim=1)
        out.append(prob.gather(1, targets[start:start + per_pass, None].to(prob.device))[:, 0].double().cpu().numpy())
        tally.add(len(batch))
    return np.concatenate(out)


def _keys(keys: Sequence[str] | None, b: int) -> list[str]:
    if keys is None:
        return [str(i) for i in range(b)]
    if isinstance(keys, str) or len(keys) != b:
        raise XcnnError(f"need one key per image: {b} images, keys {keys!r}")
    return [str(k) for k in keys]


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BatchNorm statistics, no dropout), then each flag as it was."""
    flags = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for mod, training in flags:
            mod.training = training



# ------------------------------------------------------------------------------------------
# Model checks after Quantus 0.6.0 (Hedström et al. 2023): ROAD, Faithfulness Correlation,
# Average Drop / Increase in Confidence. Pure batched functions of a ``forward`` callable
# (B×C×H×W model inputs -> B×classes logits, eval mode, chunked by the caller as it likes);
# ``chunk`` bounds how many perturbed inputs are built and sent to ``forward`` at once.

ROAD_PERCENTAGES = (10, 30, 50, 70, 90)
# Quantus's noisy_linear_imputation (after Rong et al.'s road_evaluation): each removed pixel is
# the weighted mean of its 8 neighbours (4-neighbours 1/6, diagonals 1/12), removed neighbours
# being unknowns of the same linear system.
_ROAD_STENCIL = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                 ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noise_generator(seed: int, stream: str, key: str, sample: int) -> torch.Generator:
    """A CPU generator for draw ``sample`` of one photo in one metric's ``stream``: seeded by a
    stable hash of (seed, stream, key, sample), so a value never depends on its batch."""
    import torch

    from xcnn.methods.sampling import noise_seed

    return torch.Generator().manual_seed(noise_seed(seed, f"{stream}/{key}", sample))


def road_noise(seed: int, key: str, sample: int, channels: int, removed: int) -> np.ndarray:
    """The C×K standard normal draws ROAD adds (times ``noise``) to the K imputed values of one
    photo's imputation number ``sample`` = 2·(percentage index) + (0 MoRF | 1 LeRF); float64."""
    import torch

    g = noise_generator(seed, "road", key, sample)
    return torch.randn((channels, removed), generator=g, dtype=torch.float64).numpy()


def noisy_linear_imputation(image: np.ndarray, indices: np.ndarray, draws: np.ndarray | None = None,
                            noise: float = 0.01) -> np.ndarray:
    """Quantus 0.6.0's ``noisy_linear_imputation(image, indices, noise)`` for one C×H×W image
    and H·W pixel indices, with its ``np.random.randn`` replaced by ``draws`` (C×K; None: no
    noise). The same sparse system, assembled in one go (COO rather than Quantus's lil_matrix,
    the slow part of its imputation) and solved for all channels at once by SuperLU with
    COLAMD, as ``spsolve``. float64. (A matrix-free conjugate gradient reached 1e-10 at 32 px
    but float64 convolutions made it far slower than SuperLU on the CPU at 224 px.)"""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    c, h, w = image.shape
    flat = image.reshape(c, h * w).astype(np.float64)
    idx = np.asarray(indices, dtype=np.int64)
    k = idx.size
    out = flat.copy()
    if k == 0:
        return out.reshape(image.shape)
    known = np.ones(h * w, dtype=bool)
    known[idx] = False
    var = np.zeros(h * w, dtype=np.int64)
    var[idx] = np.arange(k)
    row, col = idx // w, idx % w
    rhs = np.zeros((k, c))
    diag = np.ones(k)
    rows, cols, vals = [np.arange(k)], [np.arange(k)], []
    for (dr, dc), weight in _ROAD_STENCIL:
        valid = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
        where = np.flatnonzero(valid)
        nb = idx[where] + dr * w + dc
        inside = known[nb]
        rhs[where[inside]] -= weight * flat[:, nb[inside]].T
        rows.append(where[~inside])
        cols.append(var[nb[~inside]])
        vals.append(np.full(int((~inside).sum()), weight))
        diag[~valid] -= weight  # neighbours outside the image do not count
    data = np.concatenate([-diag, *vals])
    a = csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    solution = splu(a, permc_spec="COLAMD").solve(rhs).T
    out[:, idx] = solution if draws is None else solution + noise * draws
    return out.reshape(image.shape)


def road(
    forward: Forward,
    x: torch.Tensor,
    relevance: torch.Tensor,
    targets: torch.Tensor,
    keys: Sequence[str],
    seed: int = 0,
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = 0.01,
    chunk: int = 32,
) -> dict[str, torch.Tensor]:
    """ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449): remove the p % most (MoRF)
    or least (LeRF) relevant pixels and impute them by noisy linear imputation.

    ``x``: B×C×H×W model inputs; ``relevance``: B×1×H×W (or B×C'×H×W, summed over channels)
    per-pixel attribution a, ranked descending with ties in an order seeded by (seed, key);
    at percentage p, K = int(H·W·p/100) pixels are removed, as in Quantus. The imputation of
    each is ``noisy_linear_imputation`` with ``road_noise`` draws: one sparse solve per (photo,
    percentage, curve), on the CPU; the 2·B·P imputed inputs go through ``forward`` ``chunk``
    at a time.

    Returns float64 tensors on x's device: ``morf`` and ``lerf`` B×P (target softmax
    probability), ``morf_top1`` and ``lerf_top1`` B×P (1. where the argmax is the target:
    Quantus ROAD's MoRF quantity), and ``gap`` [B] = mean over p of (lerf − morf): high means
    the map's ranking separates what the model uses from what it does not.
    """
    import torch

    b, c, h, w = _check_batch(x, targets, keys)
    a = _pixel_relevance(relevance, x)
    pcts = [float(p) for p in percentages]
    if not pcts or any(not 0 < p < 100 for p in pcts):
        raise XcnnError(f"ROAD percentages must lie strictly between 0 and 100, got {list(percentages)!r}")
    if noise < 0:
        raise XcnnError(f"ROAD noise must be >= 0, got {noise!r}")
    _check_chunk(chunk)
    order = ranked_pixels(a, seed, keys, "road").cpu().numpy()
    image = x.detach().to("cpu", torch.float64).numpy()
    n = h * w
    counts = [int(n * p / 100) for p in pcts]  # Quantus: int(a_size * p / 100)
    jobs = [(i, j, curve) for i in range(b) for j in range(len(pcts)) for curve in (0, 1)]
    prob = torch.empty(len(jobs), dtype=torch.float64)
    top1 = torch.empty(len(jobs), dtype=torch.float64)
    tally = Tally("ROAD imputations", len(jobs))
    for start in range(0, len(jobs), chunk):
        group = jobs[start:start + chunk]
        imputed = []
        for i, j, curve in group:  # one sparse solve per image: the only per-image loop
            k = counts[j]
            idx = order[i, :k] if curve == 0 else order[i, n - k:]
            draws = road_noise(seed, keys[i], 2 * j + curve, c, k) if noise > 0 else None
            imputed.append(noisy_linear_imputation(image[i], idx, draws, noise))
            tally.add()
        batch = torch.from_numpy(np.stack(imputed)).to(x.device, x.dtype)
        tgt = targets[[i for i, _, _ in group]].to(x.device)
        p, hit = _target_probability(forward, batch, tgt)
        prob[start:start + len(group)] = p.cpu()
        top1[start:start + len(group)] = hit.cpu()
    prob = prob.view(b, len(pcts), 2).to(x.device)
    top1 = top1.view(b, len(pcts), 2).to(x.device)
    morf, lerf = prob[..., 0], prob[..., 1]
    return {"morf": morf, "lerf": lerf, "morf_top1": top1[..., 0], "lerf_top1": top1[..., 1],
            "gap": (lerf - morf).mean(dim=1)}


def ranked_pixels(relevance: torch.Tensor, seed: int, keys: Sequence[str], stream: str) -> torch.Tensor:
    """B×N (N = H·W) pixel indices by descending B×1×H×W ``relevance``; equal values in a
    random order seeded by (seed, stream, key). On relevance's device."""
    import torch

    b = relevance.shape[0]
    flat = relevance.reshape(b, -1)
    tiebreak = torch.stack([torch.rand(flat.shape[1], generator=noise_generator(seed, stream, k, 0))
                            for k in keys]).to(flat.device)
    shuffle = tiebreak.argsort(dim=1)
    ranked = flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
    return shuffle.gather(1, ranked)


def subsets(seed: int, key: str, nr_runs: int, size: int, subset_size: int) -> torch.Tensor:
    """nr_runs × subset_size LongTensor: run r's subset of ``size`` values of one photo for
    Faithfulness Correlation, drawn without replacement by a generator seeded by (seed, key, r)."""
    import torch

    return torch.stack([torch.randperm(size, generator=noise_generator(seed, "faithfulness_correlation", key, r))
                        [:subset_size] for r in range(nr_runs)])


def faithfulness_correlation(
    forward: Forward,
    x: torch.Tensor,
    relevance: torch.Tensor,
    targets: torch.Tensor,
    keys: Sequence[str],
    seed: int = 0,
    nr_runs: int = 100,
    subset_size: int = 224,
    chunk: int = 32,
) -> torch.Tensor:
    """Faithfulness Correlation (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631), as
    Quantus 0.6.0's ``FaithfulnessCorrelation``: for ``nr_runs`` random subsets S of
    ``subset_size`` of the C·H·W input values, the Pearson correlation over the runs between
    Σ_{v∈S} a_v and the drop in the target's logit f(x) − f(x with S set to x.min()).

    ``relevance``: B×1×H×W attributions, broadcast to x's C channels as Quantus does (a pixel's
    value counts once per channel drawn), or B×C×H×W. Subsets come from ``subsets(seed, key, …)``.
    Returns float64 [B] on x's device (NaN when either side is constant). High is faithful.
    """
    import torch

    b, c, h, w = _check_batch(x, targets, keys)
    size = c * h * w
    if relevance.dim() != 4 or relevance.shape[0] != b or relevance.shape[2:] != x.shape[2:] \
            or relevance.shape[1] not in (1, c):
        raise XcnnError(f"relevance must be B×1×H×W or B×C×H×W matching x {tuple(x.shape)}, "
                        f"got {tuple(relevance.shape)}")
    if nr_runs < 2 or not 1 <= subset_size <= size:
        raise XcnnError(f"faithfulness correlation needs nr_runs >= 2 and 1 <= subset_size <= C·H·W = {size}, "
                        f"got {nr_runs} and {subset_size}")
    _check_chunk(chunk)
    a = relevance.detach().expand(b, c, h, w).reshape(b, -1).to(torch.float64)
    flat = x.detach().reshape(b, -1)
    black = flat.min(dim=1).values
    picks = torch.stack([subsets(seed, k, nr_runs, size, subset_size) for k in keys]).to(x.device)  # B×R×S
    sums = a.gather(1, picks.reshape(b, -1)).view(b, nr_runs, subset_size).sum(dim=2)
    logit = _target_logit(forward, x.detach(), targets.to(x.device))
    drops = torch.empty(b * nr_runs, dtype=torch.float64, device=x.device)
    items = torch.arange(b * nr_runs, device=x.device)
    tally = Tally("faithfulness correlation passes", b * nr_runs)
    for start in range(0, b * nr_runs, chunk):
        item = items[start:start + chunk]
        i = item // nr_runs
        batch = flat[i].clone()
        batch.scatter_(1, picks.view(b * nr_runs, subset_size)[item], black[i, None].expand(-1, subset_size))
        drops[item] = logit[i] - _target_logit(forward, batch.view(-1, c, h, w), targets.to(x.device)[i])
        tally.add(len(item))
    return pearson(sums, drops.view(b, nr_runs))


def pearson(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of two B×R tensors (float64); NaN for a constant row."""
    du = u.double() - u.double().mean(dim=1, keepdim=True)
    dv = v.double() - v.double().mean(dim=1, keepdim=True)
    den = (du.square().sum(dim=1) * dv.square().sum(dim=1)).sqrt()
    r = (du * dv).sum(dim=1) / den
    return r.where(den > 0, torch_nan(r)).clamp(-1.0, 1.0)


def confidence_scale(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The B×1×H×W multiplier in [0, 1] of Average Drop: a heat map (C = 1, values in [0, 1])
    as it is, a signed map (C > 1) as r / max r with r = Σ_c m_c² (all-zero stays zero); then
    bilinearly upsampled (align_corners=False, as TorchCAM) to ``size`` when it differs."""
    import torch

    if maps.dim() != 4:
        raise XcnnError(f"maps must be B×C×H×W, got shape {tuple(maps.shape)}")
    m = maps.detach()
    if m.shape[1] == 1:
        if bool((m < 0).any() | (m > 1).any()):
            raise XcnnError("a heat map (B×1×H×W) for Average Drop must lie in [0, 1]; "
                            "min-max scale it or pass the signed map")
        scale = m
    else:
        r = m.double().square().sum(dim=1, keepdim=True)
        top = r.amax(dim=(2, 3), keepdim=True)
        scale = (r / top.where(top > 0, torch.ones_like(top))).to(m.dtype)
    if tuple(scale.shape[2:]) != tuple(size):
        scale = torch.nn.functional.interpolate(scale, size=size, mode="bilinear", align_corners=False)
    return scale


def confidence(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
               chunk: int = 32) -> dict[str, torch.Tensor]:
    """Average Drop and Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++,
    https://arxiv.org/abs/1710.11063) per image, as TorchCAM 0.5's ``ClassificationMetric``
    with ``logits_fn=softmax``: s = the target's softmax probability for x, s′ for x times
    ``confidence_scale(maps)``; ``average_drop`` = relu(s − s′)/(s + 1e-7) (low is good),
    ``increase_in_confidence`` = 1. where s < s′ (high is good). float64 [B] on x's device,
    with ``s`` and ``s_masked``."""
    import torch

    b = x.shape[0] if x.dim() == 4 else -1
    if x.dim() != 4 or maps.dim() != 4 or maps.shape[0] != b:
        raise XcnnError(f"x and maps must be B×C×H×W of the same B, got {tuple(x.shape)} and {tuple(maps.shape)}")
    _check_chunk(chunk)
    tgt = torch.as_tensor(targets, dtype=torch.long, device=x.device).reshape(-1)
    if tgt.numel() != b:
        raise XcnnError(f"need one target per image: {b} images, {tgt.numel()} targets")
    scale = confidence_scale(maps.to(x.device), (x.shape[2], x.shape[3]))
    s = torch.empty(b, dtype=torch.float64, device=x.device)
    s2 = torch.empty_like(s)
    tally = Tally("average drop passes", 2 * b)
    for start in range(0, b, max(1, chunk // 2)):
        sl = slice(start, start + max(1, chunk // 2))
        xi = x[sl].detach()
        p, _ = _target_probability(forward, torch.cat([xi, xi * scale[sl].to(x.dtype)]), tgt[sl].repeat(2))
        s[sl], s2[sl] = p[:len(xi)], p[len(xi):]
        tally.add(2 * len(xi))
    return {"average_drop": torch.relu(s - s2) / (s + 1e-7), "increase_in_confidence": (s < s2).double(),
            "s": s, "s_masked": s2}


def average_drop(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                 chunk: int = 32) -> torch.Tensor:
    """``confidence(...)["average_drop"]``: float64 [B], low is good."""
    return confidence(forward, x, maps, targets, chunk)["average_drop"]


def increase_in_confidence(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                           chunk: int = 32) -> torch.Tensor:
    """``confidence(...)["increase_in_confidence"]``: float64 [B] of 0./1., high is good."""
    return confidence(forward, x, maps, targets, chunk)["increase_in_confidence"]


def torch_nan(like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.full_like(like, float("nan"))


def _check_batch(x: torch.Tensor, targets: torch.Tensor, keys: Sequence[str]) -> tuple[int, int, int, int]:
    if x.dim() != 4:
        raise XcnnError(f"x must be B×C×H×W model inputs, got shape {tuple(x.shape)}")
    b, c, h, w = (int(v) for v in x.shape)
    if targets.dim() != 1 or targets.numel() != b:
        raise XcnnError(f"need one target per image: {b} images, targets of shape {tuple(targets.shape)}")
    if isinstance(keys, str) or len(keys) != b:
        raise XcnnError(f"need one key per image: {b} images, keys {keys!r}")
    return b, c, h, w


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise XcnnError(f"chunk must be at least 1, got {chunk!r}")


def _pixel_relevance(relevance: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """B×1×H×W relevance from B×C'×H×W matching x (summed over C' when C' > 1)."""
    if relevance.dim() != 4 or relevance.shape[0] != x.shape[0] or relevance.shape[2:] != x.shape[2:]:
        raise XcnnError(f"relevance must be B×1×H×W matching x {tuple(x.shape)}, got {tuple(relevance.shape)}")
    return relevance.detach().sum(dim=1, keepdim=True)


def _logits(forward: Forward, batch: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.no_grad():
        logits = forward(batch)
    if logits.dim() != 2 or logits.shape[0] != batch.shape[0]:
        raise XcnnError(f"forward must return B×classes logits, got shape {tuple(logits.shape)}")
    return logits


def _target_logit(forward: Forward, batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _logits(forward, batch).double().gather(1, targets[:, None].to(batch.device))[:, 0]


def _target_probability(forward: Forward, batch: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's softmax probability (float64) and whether the target is the argmax."""
    import torch

    logits = _logits(forward, batch)
    t = targets[:, None].to(logits.device)
    prob = torch.softmax(logits.float(), dim=1).gather(1, t)[:, 0].double()
    return prob, (logits.argmax(dim=1, keepdim=True) == t)[:, 0].double()
