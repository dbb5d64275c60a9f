"""Sanity checks: similarity measures with known answers, and cascading randomisation of small
models through the real engine."""
from __future__ import annotations

import copy
import math

import numpy as np
from scipy import stats
import pytest
import torch
from torch import nn

from xcnn import Explainer
from xcnn.errors import XcnnError
from xcnn.metrics import sanity

# ------------------------------------------------------------------ similarity


def test_spearman_known_answers() -> None:
    a = np.random.default_rng(0).random((1, 9, 9)) + 0.1  # one positive channel: energy is monotone in a
    assert sanity.spearman(a, a) == pytest.approx(1.0)
    assert sanity.spearman(a, -a) == pytest.approx(1.0)  # sign carries no energy
    assert sanity.spearman(a, -(a**3)) == pytest.approx(1.0)  # energy a⁶: the same ranking
    assert sanity.spearman(a, 1.0 / a) == pytest.approx(-1.0)  # the reversed ranking
    # By hand: energies [1, 4, 9, 16] vs [1, 9, 4, 16]: Σd² = 2, ρ = 1 − 6·2 / (4·15) = 0.8
    assert sanity.spearman(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 3.0], [2.0, 4.0]])) == pytest.approx(0.8)


def test_spearman_ranks_energy_summed_over_channels() -> None:
    # 3-channel map vs its 1-channel energy: the same per-pixel energy, correlation 1.
    a = np.random.default_rng(1).normal(size=(3, 8, 8))
    assert sanity.spearman(a, np.sqrt(np.square(a).sum(0))[None]) == pytest.approx(1.0)


def test_ssim_known_answers_and_scale_invariance() -> None:
    a = np.random.default_rng(2).normal(size=(3, 12, 10))
    assert sanity.ssim(a, a) == pytest.approx(1.0)
    assert sanity.ssim(a, 7.0 * a) == pytest.approx(1.0)  # min–max scaling removes the scale
    inverse = 1.0 / (np.square(a).sum(0) + 0.1)
    assert sanity.ssim(a, inverse[None]) < 0.5


def test_batched_measures_match_scikit_image_and_scipy_pair_by_pair() -> None:
    # The batch computes every pair at once; each pair must equal the libraries' own answer.
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    for shape in ((7, 7), (16, 23)):
        a, b = rng.normal(size=(5, 2, *shape)), rng.normal(size=(5, 1, *shape))
        b[:, :, : shape[0] // 2] = np.sqrt(np.square(a[:, :, : shape[0] // 2]).sum(1, keepdims=True))  # partly alike
        b[3] = np.round(b[3])  # ties in the ranks
        got_ssim, got_rho = sanity.ssim_batch(a, b), sanity.spearman_batch(a, b)
        for i in range(5):
            ea, eb = np.square(a[i]).sum(0), np.square(b[i]).sum(0)
            x, y = (ea - ea.min()) / np.ptp(ea), (eb - eb.min()) / np.ptp(eb)
            want = skimage_metrics.structural_similarity(x, y, data_range=1.0)
            assert got_ssim[i] == pytest.approx(want, rel=1e-12, abs=1e-12)
            assert got_rho[i] == pytest.approx(stats.spearmanr(ea.ravel(), eb.ravel()).statistic, rel=1e-12)


def test_constant_maps_are_defined_and_documented() -> None:
    flat, zero = np.full((1, 8, 8), 3.0), np.zeros((3, 8, 8))
    varied = np.random.default_rng(4).random((1, 8, 8))
    assert sanity.spearman(flat, zero) == 1.0 and sanity.ssim(flat, zero) == pytest.approx(1.0)
    assert math.isnan(sanity.spearman(varied, zero))
    assert 0.0 <= sanity.ssim(varied, zero) < 1.0
    assert sanity.note(varied, zero) == "map b is constant: rank correlation undefined"
    assert sanity.note(varied, varied) == "" and sanity.note(flat, zero) == ""


def test_batched_wrappers_pair_row_by_row() -> None:
    rng = np.random.default_rng(5)
    a = rng.random((3, 3, 8, 8))
    b = torch.from_numpy(a[:, :1].copy())  # 1-channel, torch, different energy
    b[2] = 0.0
    out = sanity.similarity(a, b)
    assert out["spearman"].shape == (3,) and out["ssim"].dtype == np.float64
    for i in range(2):
        assert out["spearman"][i] == pytest.approx(sanity.spearman(a[i], b[i]))
        assert out["ssim"][i] == pytest.approx(sanity.ssim(a[i], b[i]))
    assert math.isnan(out["spearman"][2]) and out["note"][2].startswith("map b is constant")
    np.testing.assert_allclose(sanity.spearman_batch(a, a), [1.0, 1.0, 1.0], rtol=1e-12)


def test_shape_errors() -> None:
    with pytest.raises(XcnnError, match="same H×W"):
        sanity.spearman(np.ones((8, 8)), np.ones((8, 9)))
    with pytest.raises(XcnnError, match="at least 7×7"):
        sanity.ssim(np.ones((6, 9)), np.ones((6, 9)))


# ------------------------------------------------------ input and class dependence


def test_map_that_ignores_the_photo_has_input_similarity_one() -> None:
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))  # its gradient is its weight row
    photos = torch.randn(4, 3, 8, 8)
    targets = torch.tensor([1, 3, 0, 2])
    partner = sanity.cyclic_partners(4)
    assert list(partner) == [1, 2, 3, 0]
    with Explainer(linear, target_layer=None) as ex:
        own = ex.explain(photos, targets, methods=["gradient"]).gradient
        other = ex.explain(photos[partner], targets, methods=["gradient"]).gradient  # photo i+1, target of i
    np.testing.assert_allclose(sanity.spearman_batch(own, other), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sanity.ssim_batch(own, other), 1.0)


def test_other_class_is_seeded_and_outside_the_set() -> None:
    exclude = {0, 1, 2, 5}
    drawn = [sanity.other_class(10, exclude, seed=0, key=f"img{i}") for i in range(50)]
    assert set(drawn) <= {3, 4, 6, 7, 8, 9} and len(set(drawn)) > 3
    assert drawn == [sanity.other_class(10, exclude, seed=0, key=f"img{i}") for i in range(50)]
    assert drawn != [sanity.other_class(10, exclude, seed=1, key=f"img{i}") for i in range(50)]
    assert sanity.other_class(3, {0, 1}, seed=9, key="x") == 2
    with pytest.raises(XcnnError, match="no class"):
        sanity.other_class(2, {0, 1}, seed=0, key="x")


# ------------------------------------------------------ cascading randomisation


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    with torch.no_grad():  # non-default statistics, so a reset is visible
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model.eval()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resnet18_groups_partition_the_layers_output_side_first() -> None:
    from torchvision.models import resnet18

    with torch.device("meta"):  # shapes only: no weights to initialise, no arithmetic
        model = resnet18(weights=None)
        groups = sanity.randomisation_steps(model, torch.zeros(1, 3, 32, 32), n_steps=5)
    flat = [name for g in groups for name in g]
    assert sorted(flat) == sorted(sanity.parameterised_modules(model)) and len(set(flat)) == len(flat) == 41
    assert [len(g) for g in groups] == [9, 8, 8, 8, 8]
    assert groups[0] == ["fc", "layer4.1.bn2", "layer4.1.conv2", "layer4.1.bn1", "layer4.1.conv1",
                         "layer4.0.downsample.1", "layer4.0.downsample.0", "layer4.0.bn2", "layer4.0.conv2"]
    assert groups[-1][-2:] == ["bn1", "conv1"]


def test_modules_that_never_run_go_last_and_few_modules_give_few_groups() -> None:
    class WithIdle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.head = nn.Linear(2, 4)
            self.aux = nn.Linear(2, 4)  # never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).mean((2, 3)))

    groups = sanity.randomisation_steps(WithIdle(), torch.zeros(1, 3, 4, 4), n_steps=5)
    assert groups == [["head"], ["conv"], ["aux"]]
    assert sanity.randomisation_steps(WithIdle(), torch.zeros(1, 3, 4, 4), n_steps=2) == [["head", "conv"], ["aux"]]


def test_gradient_map_changes_after_full_randomisation_and_caller_model_does_not() -> None:
    model = _small_cnn()
    before = _snapshot(model)
    photos = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 4, 7])
    with Explainer(model, target_layer=None) as ex:
        trained = ex.explain(photos, targets, methods=["gradient"]).gradient
    steps = []
    for step, names, randomised in sanity.cascade(model, photos[:1], n_steps=3, seed=0):
        assert randomised is not model
        with Explainer(randomised, target_layer=None) as ex:
            m = ex.explain(photos, targets, methods=["gradient"]).gradient
        steps.append((step, names, sanity.spearman_batch(trained, m).mean()))
    assert [s for s, _, _ in steps] == [1, 2, 3]
    assert steps[0][1] == ["8", "4"] and steps[-1][1] == ["8", "4", "3", "1", "0"]
    assert sanity.spearman_batch(trained, trained).mean() == pytest.approx(1.0)
    assert steps[-1][2] < 0.5  # the fully randomised model's map has little to do with the trained one's
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_batchnorm_reset_includes_running_statistics() -> None:
    model = _small_cnn()
    copy_ = copy.deepcopy(model)
    fallback = sanity.randomise(copy_, ["1"], seed=0)
    bn = copy_[1]
    assert fallback == []
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert not torch.equal(model[1].running_mean, torch.zeros(8))  # the original is untouched


def test_randomisation_is_deterministic_per_seed_and_name() -> None:
    model = _small_cnn()

    def states(seed: int) -> list[dict[str, torch.Tensor]]:
        return [_snapshot(r) for _, _, r in sanity.cascade(model, torch.zeros(1, 3, 8, 8), n_steps=3, seed=seed)]

    a, b, c = states(0), states(0), states(1)
    for sa, sb in zip(a, b):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a[-1]["0.weight"], c[-1]["0.weight"])
    # Order-free: the last step equals randomising every module at once, in any order.
    at_once = copy.deepcopy(model)
    sanity.randomise(at_once, ["0", "1", "3", "4", "8"], seed=0)
    assert all(torch.equal(a[-1][k], v) for k, v in at_once.state_dict().items())
    # The global RNG is left as it was.
    torch.manual_seed(11)
    want = torch.rand(3)
    torch.manual_seed(11)
    sanity.randomise(copy.deepcopy(model), ["0"], seed=0)
    assert torch.equal(torch.rand(3), want)


def test_module_without_reset_parameters_takes_the_reported_fallback() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gamma

    model = nn.Sequential(nn.Linear(4, 4), Scale())
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    assert sanity.randomise(one, ["0", "1"], seed=3) == ["1"]
    sanity.randomise(two, ["1"], seed=3)
    assert not torch.equal(one[1].gamma, model[1].gamma)
    assert torch.equal(one[1].gamma, two[1].gamma)
    assert one[1].gamma.abs().max() < 0.1  # N(0, 0.01²)
    with pytest.raises(XcnnError, match="no module named 'nope'"):
        sanity.randomise(one, ["nope"], seed=0)


def test_precomputed_ranks_give_the_same_similarity() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(3, 2, 9, 11)), rng.normal(size=(3, 1, 9, 11))
    a[1] = np.round(a[1])  # ties
    a[2] = 1.0  # constant: NaN against a varied map
    ra = sanity.ranks(a)
    plain, cached = sanity.similarity(a, b), sanity.similarity(a, b, ra)
    np.testing.assert_array_equal(plain["spearman"], cached["spearman"])
    np.testing.assert_array_equal(plain["ssim"], cached["ssim"])
    assert np.isnan(cached["spearman"][2]) and np.array_equal(sanity.ranks(a), ra)  # ranks left unchanged
