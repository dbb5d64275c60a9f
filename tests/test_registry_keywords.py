"""The decorators' keywords (``xcnn.method``, ``xcnn.metric``, ``xcnn.check``): typed by a TypedDict
each, and a wrong one refused at once, as Python refuses a wrong keyword."""
from __future__ import annotations

import pytest

from xcnn import registry


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh copies of the tables, so entries registered here leave the others untouched."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry.methods()))
    monkeypatch.setattr(registry, "_METRICS", dict(registry.metrics()))
    monkeypatch.setattr(registry, "_CHECKS", dict(registry.checks()))


def test_keywords_land_in_the_entries(tables: None) -> None:
    @registry.method("kw_method", label="K", kind="heat", rules=["gradient"], fields=["extra"], baseline=True)
    def m(ctx: object) -> None:
        return None

    @registry.metric("kw_metric", label="M", higher_is_better=None, fields=("a",))
    def k(maps: object, masks: object, ctx: object) -> None:
        return None

    @registry.model_check("kw_check", label="C", scope="photos", scores=[registry.Score("t", "m", "L")])
    def c(ctx: object) -> tuple[()]:
        return ()

    entry = registry.get("kw_method")
    assert (entry.kind, entry.rules, entry.fields, entry.baseline, entry.fn) == ("heat", ("gradient",), ("extra",), True, m)
    assert registry.metrics()["kw_metric"].higher_is_better is None and registry.metrics()["kw_metric"].fields == ("a",)
    check = registry.get_check("kw_check")
    assert check.scope == "photos" and check.scores == (registry.Score("t", "m", "L"),) and check.category == "faithfulness"


def test_a_misspelt_keyword_is_refused_with_a_hint(tables: None) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'refrence'; did you mean 'reference'"):
        registry.method("kw_bad", label="B", kind="signed", refrence="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="model_check\\(\\) got an unexpected keyword argument 'kind'"):
        registry.model_check("kw_bad", label="B", kind="signed")  # type: ignore[call-arg]
    assert "kw_bad" not in registry.methods() and "kw_bad" not in registry.checks()


def test_a_missing_label_is_refused(tables: None) -> None:
    with pytest.raises(TypeError, match="missing required keyword argument\\(s\\): 'label'"):
        registry.metric("kw_bad")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'kind', 'label'"):
        registry.method("kw_bad")  # type: ignore[call-arg]
