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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally

# The checks after Quantus 0.6.0 lived here; their names stay importable from this module.
from xcnn.metrics.confidence import average_drop as average_drop
from xcnn.metrics.confidence import confidence as confidence
from xcnn.metrics.confidence import confidence_scale as confidence_scale
from xcnn.metrics.confidence import increase_in_confidence as increase_in_confidence
from xcnn.metrics.correlation import CorrelationSettings as CorrelationSettings
from xcnn.metrics.correlation import faithfulness_correlation as faithfulness_correlation
from xcnn.metrics.correlation import subsets as subsets
from xcnn.metrics.forward import Batch as Batch
from xcnn.metrics.forward import Forward as Forward
from xcnn.metrics.forward import noise_generator as noise_generator
from xcnn.metrics.forward import pearson as pearson
from xcnn.metrics.localisation import ArrayLike, _as_numpy
from xcnn.metrics.road import ROAD_PERCENTAGES as ROAD_PERCENTAGES
from xcnn.metrics.road import RoadSettings as RoadSettings
from xcnn.metrics.road import noisy_linear_imputation as noisy_linear_imputation
from xcnn.metrics.road import ranked_pixels as ranked_pixels
from xcnn.metrics.road import road as road
from xcnn.metrics.road import road_noise as road_noise

if TYPE_CHECKING:
    import torch
    from torch import nn

BLUR_SIGMA = 0.05  # fraction of the longer side


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
    area: np.ndarray = (c.sum(axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / steps
    return area


@dataclass(frozen=True)
class CurveSettings:
    """``steps``: points per curve besides the start; ``seed`` of the order of tied pixels;
    ``blur_sigma``: the insertion's start, as a fraction of the longer side; ``curves_per_pass``:
    how many whole curves (of steps − 1 inner points each) share one forward pass — memory
    only, never a result."""

    steps: int = 20
    seed: int = 0
    blur_sigma: float = BLUR_SIGMA
    curves_per_pass: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.curves_per_pass < 1:
            raise XcnnError(f"steps and curves_per_pass must be at least 1, got {self.steps} and {self.curves_per_pass}")


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: ArrayLike | Mapping[str, ArrayLike],
    targets: torch.Tensor | Sequence[int],
    keys: Sequence[str] | None = None,
    settings: CurveSettings = CurveSettings(),
) -> dict[str, Any]:
    """Deletion and insertion curves of B maps.

    ``images``: B×3×H×W in the model's input space (normalised); ``maps``: B×C×H×W (any C,
    NumPy or torch), or a mapping name -> B×C×H×W for several methods' maps of the same
    images; ``targets``: B class indices. ``keys``: one string per image seeding the order of
    tied pixels (see ``pixel_order``).

    Every curve of a photo starts or ends at one of three images that do not depend on the map
    (the photo, the photo all deleted, the photo blurred): they go through the model once per
    photo. Maps that order the pixels alike (a CAM and its rescaled twin) share their curves.

    Returns float64 arrays: ``deletion_auc`` and ``insertion_auc`` [B], ``deletion_curve`` and
    ``insertion_curve`` B×(steps+1) — the target's softmax probability after k/steps of the
    pixels were deleted / inserted, k = 0..steps; for a mapping, one such dict per name.
    """
    table, target = _checked(images, maps, targets)
    # One curve pair per distinct (photo, pixel order); slot[name][i] is the pair of map i.
    unique: list[tuple[int, np.ndarray]] = []
    seen: dict[tuple[int, bytes], int] = {}
    slot: dict[str, list[int]] = {}
    for name, m in table.items():
        slot[name] = []
        for i, order in enumerate(pixel_order(m, settings.seed, keys)):
            digest = hashlib.blake2b(order.tobytes(), digest_size=16).digest()
            if (i, digest) not in seen:
                seen[(i, digest)] = len(unique)
                unique.append((i, order))
            slot[name].append(seen[(i, digest)])
    curves = _curves(model, images, target, unique, settings)

    def result(index: list[int]) -> dict[str, np.ndarray]:
        c = curves[index]
        return {"deletion_auc": auc(c[:, 0]), "insertion_auc": auc(c[:, 1]),
                "deletion_curve": c[:, 0], "insertion_curve": c[:, 1]}

    out = {name: result(index) for name, index in slot.items()}
    return out if isinstance(maps, Mapping) else out[""]


def _checked(images: torch.Tensor, maps: ArrayLike | Mapping[str, ArrayLike],
             targets: torch.Tensor | Sequence[int]) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """The maps as name -> NumPy B×C×H×W ("" for a single array) and the targets as a LongTensor,
    both checked against the images."""
    import torch

    if images.dim() != 4:
        raise XcnnError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    table = {k: _as_numpy(v) for k, v in maps.items()} if isinstance(maps, Mapping) else {"": _as_numpy(maps)}
    for m in table.values():
        if m.ndim != 4 or m.shape[0] != b or m.shape[2:] != (h, w):
            raise XcnnError(f"maps must be B×C×H×W matching images {tuple(images.shape)}, got {tuple(m.shape)}")
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if target.numel() != b:
        raise XcnnError(f"need one target per image: {b} images, {target.numel()} targets")
    return table, target


def _curves(model: nn.Module, images: torch.Tensor, target: torch.Tensor, unique: list[tuple[int, np.ndarray]],
            settings: CurveSettings) -> np.ndarray:
    """len(unique)×2×(steps+1): each (photo, pixel order)'s deletion and insertion curve."""
    import torch

    b = images.shape[0]
    steps, per_pass = settings.steps, settings.curves_per_pass
    x = images.detach().contiguous()  # a permuted (channels-last) photo would make mixed-layout batches: slow
    blurred = blur(x, settings.blur_sigma)
    curves = np.empty((len(unique), 2, steps + 1), dtype=np.float64)
    tally = Tally("deletion/insertion passes", 3 * b + 2 * len(unique) * (steps - 1))
    from xcnn.engine.layers import eval_mode

    with torch.no_grad(), eval_mode(model):
        ends = _probabilities(model, torch.cat([x, torch.zeros_like(x), blurred]), target.repeat(3),
                              per_pass * (steps + 1), tally)
        photo, deleted, start = ends[:b], ends[b:2 * b], ends[2 * b:]
        for j, (i, _) in enumerate(unique):
            curves[j, 0, 0], curves[j, 0, -1] = photo[i], deleted[i]
            curves[j, 1, 0], curves[j, 1, -1] = start[i], photo[i]
        if steps > 1:
            for group in _chunks(_inner_points(x, blurred, unique, steps), per_pass):
                prob = _probabilities(model, torch.cat([inputs for _, _, inputs in group]),
                                      torch.cat([target[unique[j][0]].repeat(steps - 1) for j, _, _ in group]),
                                      len(group) * (steps - 1), tally)
                for g, (j, which, _) in enumerate(group):
                    curves[j, which, 1:-1] = prob[g * (steps - 1):(g + 1) * (steps - 1)]
    return curves


def _inner_points(x: torch.Tensor, blurred: torch.Tensor, unique: list[tuple[int, np.ndarray]],
                  steps: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(curve pair, 0 = deletion | 1 = insertion, the steps − 1 inputs between the ends)."""
    import torch

    h, w = x.shape[-2:]
    n = h * w
    counts = np.arange(steps + 1, dtype=np.int64) * n // steps  # pixels changed at step k
    for j, (i, order) in enumerate(unique):
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        top = torch.from_numpy(rank[None, :] < counts[1:-1, None]).to(x.device).view(steps - 1, 1, h, w)
        yield j, 0, torch.where(top, torch.zeros_like(x[i]), x[i])
        yield j, 1, torch.where(top, x[i], blurred[i])


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
