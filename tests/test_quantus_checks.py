"""The Quantus-category model checks as the registry runs them: each row equals the batched
function it wraps, called directly on r = Σ_c m_c² computed here (so a wrong relevance, a
swapped measure or a row given to the wrong photo fails), and they are registered with the
directions and categories the report ranks by."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_net import build
from xcnn import registry
from xcnn.engine import Explainer
from xcnn.metrics import faithfulness as fa
from xcnn.metrics import robustness as ro
from xcnn.metrics.checks import CheckContext
from xcnn.metrics.quantus_checks import CorrelationParams, LipschitzParams, RoadParams, SensitivityParams

METHODS = ("gradient", "gradcam")


@pytest.fixture(scope="module")
def ctx() -> CheckContext:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 3, 24, 32)
    targets = torch.tensor([0, 2])
    ex = Explainer(model, target_layer="2")

    def explain(images, t, keys, other):  # type: ignore[no-untyped-def]
        maps = ex.explain(images, targets=t, methods=list(METHODS), keys=list(keys))
        return {m: maps.get(m).detach().numpy() for m in METHODS}

    maps = explain(x, targets, ["a|dog", "b|cat"], None)
    return CheckContext(model=model, images=x, targets=targets, keys=["a|dog", "b|cat"], methods=METHODS, maps=maps,
                        masks=np.ones((2, 24, 32), bool), photos=np.zeros((2, 24, 32, 3), np.uint8), seed=3,
                        classes=3, own_classes=[[0], [2]], explain_fn=explain)


def _energy(ctx: CheckContext, m: str) -> torch.Tensor:
    return torch.from_numpy(np.square(ctx.maps[m].astype(np.float64)).sum(axis=1, keepdims=True)).float()


def _table(rows) -> dict:  # type: ignore[no-untyped-def]
    return {(r.photo, r.method, r.test, r.measure, r.step): r.value for r in rows}


def test_road_rows_are_the_curves_and_gap_of_r(ctx: CheckContext) -> None:
    ctx.params = RoadParams(percentages=(20.0, 60.0))
    got = _table(registry.get_check("road").fn(ctx))
    for m in METHODS:
        want = fa.road(ctx.run, fa.Batch(ctx.images, ctx.targets, list(ctx.keys)), _energy(ctx, m),
                       fa.RoadSettings(seed=3, percentages=(20.0, 60.0), noise=0.01))
        for i in range(2):
            assert got[(i, m, "road", "gap", None)] == pytest.approx(float(want["gap"][i]), abs=1e-6)
            for k in range(2):
                assert got[(i, m, "road", "morf", k)] == pytest.approx(float(want["morf"][i, k]), abs=1e-6)
                assert got[(i, m, "road", "lerf", k)] == pytest.approx(float(want["lerf"][i, k]), abs=1e-6)
    assert len(got) == 2 * 2 * (1 + 2 * 2)


def test_correlation_and_confidence_rows(ctx: CheckContext) -> None:
    ctx.params = CorrelationParams(runs=8, subset_size=30)
    got = _table(registry.get_check("faithfulness_correlation").fn(ctx))
    ctx.params = None
    conf = _table(registry.get_check("confidence").fn(ctx))
    for m in METHODS:
        want = fa.faithfulness_correlation(ctx.run, fa.Batch(ctx.images, ctx.targets, list(ctx.keys)), _energy(ctx, m),
                                           fa.CorrelationSettings(seed=3, nr_runs=8, subset_size=30))
        drop = fa.confidence(ctx.run, ctx.images, torch.from_numpy(ctx.maps[m]), ctx.targets)
        for i in range(2):
            assert got[(i, m, "faithfulness_correlation", "pearson", None)] == pytest.approx(float(want[i]), nan_ok=True)
            assert conf[(i, m, "average_drop", "drop", None)] == pytest.approx(float(drop["average_drop"][i]))
            assert conf[(i, m, "increase_in_confidence", "increase", None)] == float(drop["increase_in_confidence"][i])


def test_robustness_rows_explain_each_perturbed_batch_once_for_every_method(ctx: CheckContext) -> None:
    calls = []
    inner = ctx.explain_fn

    def counting(*a):  # type: ignore[no-untyped-def]
        calls.append(1)
        return inner(*a)

    ctx.explain_fn = counting
    ctx.params = SensitivityParams(samples=3)
    got = _table(registry.get_check("sensitivity").fn(ctx))
    sens_calls = len(calls)
    ctx.params = LipschitzParams(samples=2)
    lip = _table(registry.get_check("local_lipschitz").fn(ctx))
    ctx.explain_fn = inner
    for m in METHODS:
        def explain(x, t, keys, m=m):  # type: ignore[no-untyped-def]
            return _energy_of(inner(x, t, keys, None)[m])
        s = ro.sensitivities(explain, ro.Batch(ctx.images, ctx.targets, list(ctx.keys)), _energy(ctx, m),
                             ro.SensitivitySettings(seed=3, nr_samples=3))
        ll = ro.local_lipschitz_estimate(explain, ro.Batch(ctx.images, ctx.targets, list(ctx.keys)), _energy(ctx, m),
                                         ro.LipschitzSettings(seed=3, nr_samples=2))
        for i in range(2):
            assert got[(i, m, "max_sensitivity", "value", None)] == pytest.approx(float(s[i].max()), rel=1e-5)
            assert got[(i, m, "avg_sensitivity", "value", None)] == pytest.approx(float(s[i].mean()), rel=1e-5)
            assert lip[(i, m, "local_lipschitz", "value", None)] == pytest.approx(float(ll[i]), rel=1e-5)
    # both methods' maps of a perturbed batch come from one explain call
    assert 0 < sens_calls < 3 * len(METHODS)


def _energy_of(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.square(m.astype(np.float64)).sum(axis=1, keepdims=True)).float()


def test_they_are_registered_with_their_category_and_direction() -> None:
    checks = registry.checks()
    wanted = {"road": ("faithfulness", [True]), "faithfulness_correlation": ("faithfulness", [True]),
              "confidence": ("faithfulness", [False, True]), "sensitivity": ("robustness", [False, False]),
              "local_lipschitz": ("robustness", [False])}
    for name, (category, directions) in wanted.items():
        assert checks[name].category == category and checks[name].scope == "maps"
        assert [s.higher_is_better for s in checks[name].scores] == directions
    with pytest.raises(ValueError, match="road percentages"):
        RoadParams(percentages=(0.0,))


def test_a_maps_check_with_photos_runs_on_its_first_pairs_only() -> None:
    from types import SimpleNamespace

    from xcnn.experiment.config import Checks, Config, DataConfig, ModelSpec, RunConfig, Size
    from xcnn.experiment.plan import all_batches, plan

    samples = [SimpleNamespace(image_id=i, category="dog", mask=np.ones((8, 8), bool)) for i in range(5)]
    config = Config(DataConfig(("dog",)), (ModelSpec("m"),), RunConfig(sizes=(Size("32", (32, 32)),), batch_size=2),
                    checks=Checks(faithfulness=True, faithfulness_photos=4,
                                  others=(("road", RoadParams(photos=1)), ("confidence", None))))
    pairs: dict[str, set[str]] = {}
    for batch in all_batches(config, samples):
        for name, keys in batch.checks:
            pairs.setdefault(name, set()).update(keys)
    assert pairs == {"faithfulness": {f"{i}|dog" for i in range(4)}, "road": {"0|dog"},
                     "confidence": {f"{i}|dog" for i in range(4)}}
    # once every record exists, only the batches of pairs lacking a check's rows are planned, with that check
    done = {("m", "32", str(i), "dog", "gradient") for i in range(5)} | {
        ("m", "32", str(i), "dog", m) for i in range(5) for m in config.run.methods}
    todo = plan(config, samples, done, set())
    assert [sorted(n for n, _ in b.checks) for b in todo] == [["confidence", "faithfulness", "road"],
                                                             ["confidence", "faithfulness"]]
