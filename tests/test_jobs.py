"""The worker's job types and the check rows of a job (xcnn.experiment.jobs, outputs)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xcnn import registry
from xcnn.experiment import outputs
from xcnn.experiment.config import Checks, ModelSpec, Size
from xcnn.experiment.explained import EngineParams, Explained, Targets
from xcnn.experiment.jobs import BaselineJob, CheckJob, RecordJob

from tests.tiny_net import build


@pytest.fixture
def two_checks() -> Iterator[list[tuple[str, list[str]]]]:
    """Two "maps"-scope checks that note the pairs they saw; forgotten after the test."""
    saved = dict(registry.checks())
    seen: list[tuple[str, list[str]]] = []
    for name in ("first", "second"):
        def check(ctx, name=name):  # type: ignore[no-untyped-def]
            seen.append((name, list(ctx.keys)))
            assert len(ctx.images) == len(ctx.keys) == len(ctx.masks) == len(ctx.maps["gradient"])
            yield registry.CheckRow(0, "gradient", "t", "m", 1.0)
        registry.model_check(name, label=name)(check)
    yield seen
    registry._CHECKS.clear()
    registry._CHECKS.update(saved)


def _units(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(sample=SimpleNamespace(image_id=i, category="dog", file=f"p{i}.png"),
                            photo=np.full((16, 16, 3), i, np.uint8), mask=np.ones((16, 16), bool)) for i in range(n)]


def test_the_checks_of_a_job_share_one_model_input_and_each_sees_its_own_pairs(
        two_checks: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real = outputs.model_input
    monkeypatch.setattr(outputs, "model_input", lambda *a: built.append(1) or real(*a))
    lm = SimpleNamespace(model=build(), categories=["dog", "b", "c"], wnids=None, device=torch.device("cpu"),
                         normalize=lambda x: x, explainer=lambda *a, **k: None)
    units = _units(3)
    job = RecordJob(ModelSpec("m"), Size("16", (16, 16)), tuple(u.sample for u in units), ("gradient",))  # type: ignore[arg-type]
    outs = [Explained(maps={"gradient": np.ones((3, 16, 16), np.float32)}, ms={}, target=0) for _ in units]
    setup = outputs.CheckSetup(lm, None, job, Checks(), Targets("label"), EngineParams())  # type: ignore[arg-type]
    rows = outputs.check_rows(setup, units, outs, [("first", [0, 2]), ("second", [1])])  # type: ignore[arg-type]
    assert len(built) == 1
    assert two_checks == [("first", ["0|dog", "2|dog"]), ("second", ["1|dog"])]
    assert [[r["check"] for r in rows[("m", "16", str(i), "dog")]] for i in range(3)] == [["first"], ["second"], []]


def test_a_check_jobs_keys_name_its_check_and_a_failed_job_names_its_photos() -> None:
    sample = SimpleNamespace(image_id=5, category="dog", file=Path("/d/p5.png"))
    size = Size("16", (16, 16))
    check = CheckJob(ModelSpec("m"), size, (sample,), ("gradient",), check="dependence")  # type: ignore[arg-type]
    record = RecordJob(ModelSpec("m"), size, (sample,), ("gradient",))  # type: ignore[arg-type]
    assert check.keys() == [("m", "16", "5", "dog#dependence")] and record.keys() == [("m", "16", "5", "dog")]
    (failed,) = BaselineJob(ModelSpec("none"), size, (sample,), ("uniform",)).failed("lost")  # type: ignore[arg-type]
    assert (failed.key, failed.failure, failed.photo) == (("none", "16", "5", "dog"), "lost", (5, "p5.png"))


def test_a_check_on_some_units_gets_their_input_as_model_input_lays_it_out() -> None:
    # A convolution's last bits follow the input's memory layout: rows taken from the job's input
    # must equal, strides too, the input of those units alone (0.2's check rows to 1e-6).
    from xcnn.experiment.explained import model_input

    lm = SimpleNamespace(normalize=lambda x: (x - 0.5) / 0.25)
    units = _units(4)
    for i, u in enumerate(units):
        u.photo = np.random.default_rng(i).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    full = model_input(lm, units, torch.device("cpu"))  # type: ignore[arg-type]
    inputs = outputs._Inputs(full, torch.zeros(4, dtype=torch.long), {}, np.zeros((4, 1)), np.zeros((4, 1)))
    alone = model_input(lm, [units[1], units[3]], torch.device("cpu"))  # type: ignore[arg-type]
    taken = inputs.take([1, 3]).images
    assert torch.equal(taken, alone) and taken.stride() == alone.stride()
