"""Sanity checks (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292): does a map change
when the model, the photo or the class changes?

Similarity of two maps of the same H×W (any channel counts; pure NumPy):

- ``spearman(a, b)``: Spearman rank correlation of the per-pixel energies Σ_c I² (ties get
  average ranks). Signs do not count: a and −a have correlation 1.
- ``ssim(a, b)``: SSIM (Wang et al. 2004) of the energies min–max scaled to [0, 1], data range
  1, 7×7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03, the mean over the window
  centres at least 3 pixels from the border (``skimage.metrics.structural_similarity``'s
  defaults; the same formula is used here when scikit-image is missing). Maps must be at
  least 7×7.
- Constant maps (all pixels of equal energy, all-zero maps included): both constant → 1 for
  both measures (the maps agree: neither ranks any pixel above another); exactly one constant
  → Spearman NaN (a rank correlation with an all-tied side is undefined) with a note, while
  SSIM stays defined (the constant map scales to all zeros).
- ``similarity(a, b)``: both measures and the notes for B pairs of maps.

Cascading model randomisation: ``randomisation_steps`` splits the modules that own parameters
into groups from the output down; ``cascade`` yields a copy of the model with more and more
groups re-initialised (``randomise``), never touching the caller's model. The runner explains
each randomised copy with the same method, photo and target, and compares the map to the
trained model's map: a map that stays similar does not reflect the model.

Input dependence and class dependence, computed by the runner with the measures above:

- input dependence: for photos 0..n−1 of one size (one model, one method), the map of photo i
  and the map of photo j = (i + 1) mod n (``cyclic_partners``), both explained for photo i's
  target; high similarity means the map follows the target (or the architecture), not the
  photo. A map that ignores the photo scores exactly 1.
- class dependence: the maps of one photo for its target and for ``other_class(n_classes,
  exclude=the category's ImageNet classes, seed, key=photo key)``, a seeded uniformly drawn
  class outside the category's set; high similarity means the map does not depend on the
  class explained.
"""
from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, stats

from xcnn.errors import XcnnError
from xcnn.metrics.faithfulness import key_seed
from xcnn.metrics.localisation import ArrayLike, _as_numpy

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

SSIM_WINDOW = 7
FALLBACK_STD = 0.01  # normal init of parameters whose module has no reset_parameters()


# ---------------------------------------------------------------- similarity (pure NumPy)


def pixel_energy(a: ArrayLike) -> np.ndarray:
    """H×W float64 energy Σ_c I² of one map given as C×H×W or H×W."""
    m = _as_numpy(a)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise XcnnError(f"a map must be C×H×W or H×W, got shape {tuple(m.shape)}")
    e: np.ndarray = np.square(m, dtype=np.float64).sum(axis=0)
    return e


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ea, eb = pixel_energy(a), pixel_energy(b)
    if ea.shape != eb.shape:
        raise XcnnError(f"maps must have the same H×W, got {ea.shape} and {eb.shape}")
    return ea, eb


def _constant(e: np.ndarray) -> bool:
    return bool(e.max() == e.min())


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of the two maps' per-pixel energies; 1.0 when both maps are
    constant, NaN when exactly one is (see ``note``)."""
    ea, eb = _pair(a, b)
    return float(_spearman(ea[None], eb[None])[0])


def ssim(a: ArrayLike, b: ArrayLike) -> float:
    """SSIM of the two maps' energies, each min–max scaled to [0, 1] (a constant map to zeros):
    scikit-image's default (7×7 uniform window, sample covariance, data range 1)."""
    ea, eb = _pair(a, b)
    return float(_ssim(ea[None], eb[None])[0])


def note(a: ArrayLike, b: ArrayLike) -> str:
    """Why ``spearman(a, b)`` is NaN, or ""."""
    ca, cb = _constant(pixel_energy(a)), _constant(pixel_energy(b))
    if ca != cb:
        return f"map {'a' if ca else 'b'} is constant: rank correlation undefined"
    return ""


def similarity(a: ArrayLike, b: ArrayLike, ranks_a: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Both measures for B pairs: ``a`` and ``b`` are B×C×H×W (C may differ between them).
    Returns ``spearman`` and ``ssim`` (float64 [B]) and ``note`` (str [B], "" or why NaN).
    ``ranks_a``: ``ranks(a)``, when ``a`` is compared with many ``b`` (ranking is most of the cost)."""
    ea, eb = _energies(a, b)
    const_a, const_b = _constant_rows(ea), _constant_rows(eb)
    notes = [f"map {'a' if x else 'b'} is constant: rank correlation undefined" if x != y else ""
             for x, y in zip(const_a, const_b)]
    return {"spearman": _spearman(ea, eb, ranks_a), "ssim": _ssim(ea, eb), "note": np.array(notes, dtype=object)}


def ranks(a: ArrayLike) -> np.ndarray:
    """B×(H·W) average ranks of the per-pixel energies of B×C×H×W maps (ties share their mean)."""
    e, _ = _energies(a, a)
    return _ranks(e)


def _ranks(e: np.ndarray) -> np.ndarray:
    ranks: np.ndarray = stats.rankdata(e.reshape(e.shape[0], -1), axis=1)
    return ranks


def spearman_batch(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``spearman`` of each of B pairs of B×C×H×W maps; float64 [B]."""
    return _spearman(*_energies(a, b))


def ssim_batch(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``ssim`` of each of B pairs of B×C×H×W maps; float64 [B]."""
    return _ssim(*_energies(a, b))


def _energies(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """B×H×W float64 energies Σ_c I² of two B×C×H×W batches of maps."""
    ma, mb = _as_numpy(a), _as_numpy(b)
    if ma.ndim != 4 or mb.ndim != 4 or ma.shape[0] != mb.shape[0] or ma.shape[2:] != mb.shape[2:]:
        raise XcnnError(f"maps must be B×C×H×W of the same B, H and W, got {tuple(ma.shape)} and {tuple(mb.shape)}")
    return np.square(ma, dtype=np.float64).sum(axis=1), np.square(mb, dtype=np.float64).sum(axis=1)


def _constant_rows(e: np.ndarray) -> np.ndarray:
    flat = e.reshape(e.shape[0], -1)
    return np.asarray(flat.max(axis=1) == flat.min(axis=1))


def _spearman(ea: np.ndarray, eb: np.ndarray, ranks_a: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of average ranks (ties share their mean rank), per row of B×H×W."""
    ra = _ranks(ea) if ranks_a is None else ranks_a.astype(np.float64)  # a copy: centred below
    rb = _ranks(eb)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    ca, cb = _constant_rows(ea), _constant_rows(eb)
    return np.where(ca & cb, 1.0, np.where(ca | cb, np.nan, np.clip(rho, -1.0, 1.0)))


def _unit(e: np.ndarray) -> np.ndarray:
    """Each H×W of B×H×W min–max scaled to [0, 1]; a constant one to zeros."""
    lo = e.min(axis=(1, 2), keepdims=True)
    span = e.max(axis=(1, 2), keepdims=True) - lo
    scaled: np.ndarray = np.divide(e - lo, span, out=np.zeros_like(e), where=span > 0)
    return scaled


def _ssim(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """scikit-image's default SSIM (data range 1) of each pair of B×H×W energies, all B at once."""
    if min(ea.shape[1:]) < SSIM_WINDOW:
        raise XcnnError(f"SSIM needs maps of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {ea.shape[1:]}")
    x, y = _unit(ea), _unit(eb)
    k1, k2, r = 0.01, 0.03, 1.0
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image

    def mean(v: np.ndarray) -> np.ndarray:
        filtered: np.ndarray = ndimage.uniform_filter(v, size=(1, SSIM_WINDOW, SSIM_WINDOW), mode="reflect")
        return filtered

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2  # windows that reach past the border are left out
    ssim: np.ndarray = s[:, pad:-pad, pad:-pad].mean(axis=(1, 2), dtype=np.float64)
    return ssim


# ------------------------------------------------------- input and class dependence


def cyclic_partners(n: int) -> np.ndarray:
    """Index j = (i + 1) mod n of the photo whose map photo i's map is compared with."""
    if n < 2:
        raise XcnnError(f"input dependence needs at least 2 photos of one size, got {n}")
    return (np.arange(n) + 1) % n


def other_class(n_classes: int, exclude: Iterable[int], seed: int, key: str) -> int:
    """A class drawn uniformly from range(n_classes) minus ``exclude``, by a generator seeded
    with (seed, key): the same photo key always gets the same class."""
    banned = {int(c) for c in exclude}
    allowed = np.array([c for c in range(n_classes) if c not in banned], dtype=np.int64)
    if allowed.size == 0:
        raise XcnnError(f"no class outside the excluded {len(banned)} of {n_classes} classes")
    return int(np.random.default_rng(key_seed(seed, key)).choice(allowed))


# ------------------------------------------------------ cascading model randomisation


def parameterised_modules(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, in ``named_modules`` order. For CNNs
    these are the leaf layers (conv, linear, norm), plus e.g. ConvNeXt's blocks, which own a
    layer-scale parameter besides their children."""
    return [name for name, mod in model.named_modules() if next(mod.parameters(recurse=False), None) is not None]


def randomisation_steps(model: nn.Module, example: torch.Tensor, n_steps: int = 5) -> list[list[str]]:
    """The parameterised modules (``parameterised_modules``) from the output down, split into
    ``n_steps`` groups of nearly equal size (the first groups get one more when it does not
    divide); fewer groups when there are fewer modules.

    The order is the reverse of the order in which the modules last finished in one probe
    forward pass of ``example`` (B×3×H×W; eval mode, no gradient; the model's flags are
    restored). Modules that never ran in the probe cannot change the output for this input;
    they go after the ran ones (``named_modules`` order), into the last group, so that after
    the last step every parameter of the model is re-initialised. The groups partition
    ``parameterised_modules(model)``.
    """
    import torch

    from xcnn.engine.layers import eval_mode

    if n_steps < 1:
        raise XcnnError(f"n_steps must be at least 1, got {n_steps}")
    owners = parameterised_modules(model)
    if not owners:
        raise XcnnError("the model has no parameters to randomise")
    modules = dict(model.named_modules())
    last_finish: dict[str, int] = {}
    clock = itertools.count()

    def hook(name: str) -> Callable[..., None]:
        def record(*_: object) -> None:
            last_finish[name] = next(clock)

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in owners]
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for h in handles:
            h.remove()
    ran = sorted(last_finish, key=last_finish.__getitem__, reverse=True)
    idle = [name for name in owners if name not in last_finish]
    if idle:
        log.info("modules that never ran in the probe pass go into the last group: %s", ", ".join(idle))
    ordered = ran + idle
    k = min(n_steps, len(ordered))
    if k < n_steps:
        log.info("only %d modules own parameters: %d groups instead of %d", k, k, n_steps)
    return [list(g) for g in np.array_split(np.array(ordered, dtype=object), k)]


def randomise(model: nn.Module, modules: Sequence[str], seed: int) -> list[str]:
    """Re-initialise the named modules of ``model`` IN PLACE — pass a copy you own
    (``copy.deepcopy``); ``cascade`` does. Returns the names that took the fallback.

    A leaf module re-initialises itself with its own ``reset_parameters()`` (PyTorch's default
    init of that layer); BatchNorm's ``reset_parameters`` also resets its running statistics
    (mean 0, variance 1, batch count 0) and sets γ = 1, β = 0, so a "randomised" BatchNorm is
    an identity-like normalisation, not a random one. A module without ``reset_parameters``,
    or one with children (whose own reset could reach into them), gets the fallback instead:
    each of its own parameters drawn from N(0, 0.01²). The random numbers come from torch's
    CPU generator seeded by ``key_seed(seed, name)`` inside a forked RNG state: the result
    depends only on (seed, module name), not on the order, the device or the global seed.
    """
    import torch

    named = dict(model.named_modules())
    unknown = [name for name in modules if name not in named]
    if unknown:
        raise XcnnError(f"no module named {', '.join(map(repr, unknown))} in the model")
    fallback: list[str] = []
    for name in modules:
        mod = named[name]
        own = list(mod.parameters(recurse=False))
        if not own:
            continue
        devices = {p.device for p in own} | {b.device for b in mod.buffers(recurse=False)}
        resettable = callable(getattr(mod, "reset_parameters", None)) and next(mod.children(), None) is None
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(key_seed(seed, name))
            if resettable:
                # Reset on the CPU so the numbers are the same whatever device the model is on.
                device = next(iter(devices))
                if device.type != "cpu":
                    mod.to("cpu")
                mod.reset_parameters()
                if device.type != "cpu":
                    mod.to(device)
            else:
                for p in own:
                    p.copy_(torch.randn(p.shape, dtype=torch.float64).mul_(FALLBACK_STD).to(p.dtype))
                fallback.append(name)
    if fallback:
        log.debug("no reset_parameters(), re-initialised from N(0, %g²): %s", FALLBACK_STD, ", ".join(fallback))
    return fallback


def cascade(
    model: nn.Module, example: torch.Tensor, n_steps: int = 5, seed: int = 0
) -> Iterator[tuple[int, list[str], nn.Module]]:
    """Cumulative randomisation from the output down: yields (step, names, randomised) for
    step = 1..len(groups), where ``names`` lists every module re-initialised so far (groups
    of ``randomisation_steps(model, example, n_steps)``, output side first).

    ``randomised`` is one deep copy of ``model`` that each step randomises further: use it
    before asking for the next step, or ``copy.deepcopy`` it to keep it. The caller's model is
    never modified. Since ``randomise`` depends only on (seed, name), step k's copy equals
    ``randomise(copy.deepcopy(model), names, seed)``.
    """
    groups = randomisation_steps(model, example, n_steps)
    work = copy.deepcopy(model)
    done: list[str] = []
    fallback: list[str] = []
    for step, group in enumerate(groups, start=1):
        fallback += randomise(work, group, seed)
        done = done + group
        yield step, list(done), work
    # The documented rule at work, not a fault: said once per model (not per step, not per batch).
    told = (type(model).__name__, tuple(fallback))
    if fallback and told not in _TOLD:
        _TOLD.add(told)
        log.info("randomisation: %d modules without their own reset_parameters() re-initialised from N(0, %g²) "
                 "(%s, …)", len(fallback), FALLBACK_STD, ", ".join(fallback[:3]))


_TOLD: set[tuple[str, tuple[str, ...]]] = set()
