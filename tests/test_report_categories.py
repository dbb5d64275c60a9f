"""The method card's rank per metric category, the figure of ranks per metric, the sentence where
two metrics of a category order the methods oppositely, per-metric intervals, tidy checks.csv.

Expected ranks and Spearman correlations are worked out by hand (Spearman by 1 − 6Σd²/(n(n²−1)),
not by the code's correlation of ranks); intervals against ``cluster_bootstrap_ci`` and an
explicit resampling loop."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.report_fixture import make_run_dir, rewrite_records, write_checks
from xcnn.runfolder import descriptions
from xcnn.report import categories, stats, tables

SNAPSHOT = json.loads(descriptions.SNAPSHOT.read_text())
UP = {"label": "Up score", "higher_is_better": True, "category": "complexity"}
DOWN = {"label": "Down score", "higher_is_better": False, "category": "complexity"}
NOTE = {"label": "A description", "higher_is_better": None, "category": "complexity"}
FAITH = {"label": "Faith check", "category": "faithfulness", "scope": "maps",
         "scores": [{"test": "drop", "measure": "auc", "label": "Drop AUC", "higher_is_better": False},
                    {"test": "road", "measure": "gap", "label": "ROAD gap", "higher_is_better": True}]}


def _registry(metrics: dict, checks: dict | None = None) -> dict:
    out = {"methods": SNAPSHOT["methods"], "metrics": {**SNAPSHOT["metrics"], **metrics},
           "metric_order": [*SNAPSHOT["metrics"], *metrics]}  # config.json sorts its keys
    if checks is not None:
        out["checks"] = checks
    return json.loads(json.dumps(out, sort_keys=True))


def _described(metrics: dict, checks: dict | None = None) -> descriptions.Described:
    return descriptions.parse(_registry(metrics, checks), "x", ranked=True)


def _records(values: dict[str, dict[str, float]], photos: int = 2) -> pd.DataFrame:
    """Records of each method (and baseline) with these field values on every photo; P = 0.5."""
    return pd.DataFrame([{"id": i, "class": "dog", "CNN": "none" if m == "edges" else "net", "size": "224",
                          "method": m, "P": 0.5, "lift": 1.0, **fields} for i in range(photos) for m, fields in values.items()])


# --- ranks ---------------------------------------------------------------------------------------

def test_ranks_follow_each_metrics_direction_and_leave_baselines_and_descriptions_out():
    df = _records({"gradient": {"up": 0.9, "down": 0.9, "note": 1.0},
                   "deconvnet": {"up": 0.5, "down": 0.1, "note": 2.0},
                   "gradcam": {"up": 0.1, "down": 0.5, "note": 3.0},
                   "edges": {"up": 5.0, "down": -5.0, "note": 4.0}})  # a baseline best on both: not ranked
    with tables.describing(_described({"up": UP, "down": DOWN, "note": NOTE})):
        ranked = tables.rankings(df)
        card = tables.method_card(df, ranked=ranked)
        shown = tables.card_for_display(card)
    assert list(ranked.ranks.index) == ["gradient", "deconvnet", "gradcam"]
    assert "note" not in ranked.ranks.columns  # a description ranks nothing
    assert ranked.ranks["up"].to_dict() == {"gradient": 1, "deconvnet": 2, "gradcam": 3}
    assert ranked.ranks["down"].to_dict() == {"gradient": 3, "deconvnet": 1, "gradcam": 2}  # lower is better
    # normalised: up 1, .5, 0; down 0, 1, .5 -> means .5, .75, .25
    assert card.set_index("method")["Complexity rank"].to_dict() == pytest.approx(
        {"gradient": 2, "deconvnet": 1, "gradcam": 3, "edges": math.nan}, nan_ok=True)
    assert shown.set_index("Method")["Complexity rank"].to_dict() == {
        "Gradient": "2", "Deconvnet": "1", "Grad-CAM": "3", "Edges (baseline)": "—"}
    assert tables.card_headers(list(shown.columns))["Complexity rank"] == "Compl. rank"


def test_ties_share_their_mean_rank_and_a_metric_one_method_has_ranks_nothing():
    df = _records({"gradient": {"up": 0.5, "down": 0.3}, "deconvnet": {"up": 0.5 + 1e-13, "down": math.nan},
                   "gradcam": {"up": 0.2, "down": math.nan}})
    with tables.describing(_described({"up": UP, "down": DOWN})):
        ranked = tables.rankings(df)
    assert ranked.ranks["up"].to_dict() == {"gradient": 1.5, "deconvnet": 1.5, "gradcam": 3}
    assert "down" not in ranked.ranks.columns and list(ranked.by_category.columns) == ["localisation", "complexity"]


def test_check_scores_and_a_plugin_category_are_ranked_from_their_descriptions_alone():
    fair = {"label": "Fairness score", "higher_is_better": True, "category": "fairness"}
    df = _records({"gradient": {"fair": 0.1}, "deconvnet": {"fair": 0.7}, "gradcam": {"fair": 0.4}})
    rows = [{"id": i, "method": m, "test": test, "measure": measure, "step": None, "value": v}
            for i in range(2) for m, drop, gap in (("gradient", 0.2, 0.1), ("deconvnet", 0.6, 0.3),
                                                  ("gradcam", 0.4, 0.2))
            for test, measure, v in (("drop", "auc", drop), ("road", "gap", gap))]
    with tables.describing(_described({"fair": fair}, {"faith": FAITH})):
        ranked = tables.rankings(df, pd.DataFrame(rows))
        card = tables.method_card(df, pd.DataFrame(rows), ranked).set_index("method")
    assert ranked.ranks["Drop AUC"].to_dict() == {"gradient": 1, "deconvnet": 3, "gradcam": 2}
    assert ranked.ranks["ROAD gap"].to_dict() == {"gradient": 3, "deconvnet": 1, "gradcam": 2}
    assert card["Fairness rank"].to_dict() == {"gradient": 3, "deconvnet": 1, "gradcam": 2}
    # Quantus's order first, then the plugin's category
    assert [c for c in card.columns if c.endswith(" rank")] == ["Localisation rank", "Faithfulness rank",
                                                                   "Fairness rank"]
    assert card["Faithfulness rank"].to_dict() == {"gradient": 1, "deconvnet": 1, "gradcam": 1}  # all tie
    sentences = categories.sentences(ranked.conflicts)
    assert sentences == ["Faithfulness: Drop AUC and ROAD gap (Spearman −1.00, 3 methods) rank the methods in "
                         "opposite orders."]


def _spearman_by_hand(x: list[int], y: list[int]) -> float:
    n = len(x)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(x, y)) / (n * (n * n - 1))


@pytest.mark.parametrize("down_ranks", [[1, 2, 3, 4], [2, 4, 1, 3], [3, 4, 1, 2], [4, 3, 2, 1]])
def test_a_conflict_is_said_exactly_when_spearman_is_negative(down_ranks):
    methods = ["gradient", "deconvnet", "guided_backprop", "gradcam"]
    other = {"label": "Other", "higher_is_better": False, "category": "robustness"}
    # up ranks the methods 1..4; down (lower is better) ranks them `down_ranks`; "other", in
    # another category, always opposite to up: never a conflict
    df = _records({m: {"up": 0.9 - 0.1 * i, "down": 0.1 * down_ranks[i], "other": 0.9 - 0.1 * i}
                   for i, m in enumerate(methods)})
    with tables.describing(_described({"up": UP, "down": DOWN, "other": other})):
        ranked = tables.rankings(df)
    rho = _spearman_by_hand([1, 2, 3, 4], down_ranks)
    said = categories.sentences(ranked.conflicts)
    if rho < 0:
        assert said == [f"Complexity: Up score and Down score (Spearman {rho:.2f}, 4 methods) rank the methods in "
                        "opposite orders.".replace("-", "−")]
    else:
        assert said == []
    assert [(c.a.key, c.b.key) for c in ranked.conflicts] == ([("up", "down")] if rho < 0 else [])


# --- the report: card, figure, intervals ---------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four methods, a baseline, two plugin metrics ordering the methods oppositely, one check."""
    run_dir = tmp_path_factory.mktemp("categories") / "run"
    methods = ("gradient", "deconvnet", "guided_backprop", "gradcam")
    records = make_run_dir(run_dir, images=((1, "dog"), (2, "cat"), (3, "dog")), cnns=("resnet18",),
                           sizes=("224",), methods=methods, baselines=("edges",), pictures=False)
    rng = np.random.default_rng(3)
    for rec in records:
        k = methods.index(rec["method"]) if rec["method"] in methods else 0
        rec["up"] = 0.2 * k + float(rng.uniform(0, 0.1))
        rec["down"] = 0.2 * k + float(rng.uniform(0, 0.1))  # lower is better: the opposite order
    rewrite_records(run_dir, records)
    body = json.loads((run_dir / "config.json").read_text())
    body["registry"] = _registry({"up": UP, "down": DOWN}, {"faith": FAITH})
    (run_dir / "config.json").write_text(json.dumps(body))
    write_checks(run_dir, [{"id": i, "class": c, "CNN": "resnet18", "size": "224", "method": m, "test": "drop",
                            "measure": "auc", "step": None, "value": float(rng.uniform()), "steps": 8, "seed": 0,
                            "check": "faith"} for i, c in ((1, "dog"), (2, "cat")) for m in methods])
    from xcnn.experiment.export import write_exports
    from xcnn.report import write_report

    write_exports(run_dir)
    with pytest.MonkeyPatch.context() as patch:  # the P figures and grids are other tests' (and take seconds)
        patch.setattr("xcnn.report.build.figures.write_figures", lambda *a, **k: [])
        patch.setattr("xcnn.report.build.grids.write_grids", lambda *a, **k: [])
        write_report(run_dir)
    return run_dir, records


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # builds a report (the P figures and grids left out)
def test_the_card_says_the_conflict_and_the_figure_shows_every_metric(run):
    run_dir, _ = run
    report = run_dir / "report"
    sentence = ("Complexity: Up score and Down score (Spearman −1.00, 4 methods) rank the methods in opposite "
                "orders.")
    assert f'<p class="note">{sentence}</p>' in (report / "index.html").read_text(encoding="utf-8")
    assert sentence in (report / "tables" / "method_card.md").read_text(encoding="utf-8")
    card = {r["Method"]: r for r in _csv(report / "tables" / "method_card.csv")}
    assert card["Edges (baseline)"]["Complexity rank"] == ""  # not ranked
    # normalised ranks up 0, 1/3, 2/3, 1 and down 1, 2/3, 1/3, 0: every method ties
    assert {card[m]["Complexity rank"] for m in ("Gradient", "Deconvnet", "Guided Backprop", "Grad-CAM")} == {"1"}
    assert card["Gradient"]["Localisation rank"] != ""
    with Image.open(report / "figures" / "ranks_per_metric.png") as im:
        assert im.size[0] > 600 and im.size[1] > 300
    assert (report / "figures" / "ranks_per_metric.svg").is_file()
    svg = (report / "figures" / "ranks_per_metric.svg").read_text(encoding="utf-8")
    for words in ("Up score ↑", "Down score ↓", "Drop AUC ↓", "Complexity", "Faithfulness", "Localisation"):
        assert words in svg


@pytest.mark.slow  # builds a report (the P figures and grids left out)
def test_every_mean_of_the_card_has_its_cluster_bootstrap_interval_in_the_csv(run):
    run_dir, records = run
    tables_dir = run_dir / "report" / "tables"
    card = {r["Method"]: r for r in _csv(tables_dir / "method_card.csv")}
    table = {r["Method"]: r for r in _csv(tables_dir / "table_7_1_methods.csv")}
    for label, row in card.items():  # P: the very interval of Table 7.1 (one draw of the photos for all)
        assert float(row["Mean P 95 % CI low"]) == pytest.approx(float(table[label]["95 % CI low"]), abs=1e-9)
        assert float(row["Mean P 95 % CI high"]) == pytest.approx(float(table[label]["95 % CI high"]), abs=1e-9)
    part = [r for r in records if r["method"] == "deconvnet"]
    lo, hi = stats.cluster_bootstrap_ci(np.array([r["up"] for r in part]), np.array([r["id"] for r in part]))
    assert float(card["Deconvnet"]["Mean Up score ↑ 95 % CI low"]) == pytest.approx(lo, abs=1e-9)
    assert float(card["Deconvnet"]["Mean Up score ↑ 95 % CI high"]) == pytest.approx(hi, abs=1e-9)
    assert lo < float(card["Deconvnet"]["Mean Up score ↑"]) < hi
    lo_up, hi_up = lo, hi
    drop = [r for r in _csv(run_dir / "checks.csv") if r["method"] == "gradcam" and r["test"] == "drop"]
    lo, hi = stats.cluster_bootstrap_ci(np.array([float(r["value"]) for r in drop]), np.array([r["id"] for r in drop]))
    assert float(card["Grad-CAM"]["Drop AUC 95 % CI low"]) == pytest.approx(lo, abs=1e-9)
    assert float(card["Grad-CAM"]["Drop AUC 95 % CI high"]) == pytest.approx(hi, abs=1e-9)
    page = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    shown_card = page[page.index('id="method-card"'):page.index('id="tables"')].split("<p")[0]
    assert "CI low" not in shown_card and "Mean Up score" not in shown_card  # the page's card stays narrow
    # ... and the table below gives every mean with its interval: tidy in the CSV, "m [lo, hi]" on the page
    means = {(r["Method"], r["Mean of"]): r for r in _csv(tables_dir / "metric_means.csv")}
    up = means[("Deconvnet", "Mean Up score ↑")]
    assert (float(up["95 % CI low"]), float(up["95 % CI high"])) == pytest.approx((lo_up, hi_up), abs=1e-9)
    assert len(means) == len(card) * 5  # P, lift, up, down, Drop AUC
    assert f"{float(up['Mean']):.3f} [{lo_up:.3f}, {hi_up:.3f}]" in page


def test_one_draw_of_the_photos_for_many_means_is_the_cluster_bootstrap_of_each():
    # Against an explicit loop: resample the photos, take every record of each drawn photo, mean.
    rng = np.random.default_rng(5)
    photos = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    a = rng.uniform(size=len(photos))
    b = np.where(np.isin(photos, [1, 3]), np.nan, rng.uniform(size=len(photos)))  # photos 1 and 3 lack b
    sums = np.stack([np.bincount(photos, weights=np.nan_to_num(v)) for v in (a, b)], axis=1)
    counts = np.stack([np.bincount(photos, weights=np.isfinite(v).astype(float)) for v in (a, b)], axis=1)
    lo, hi = stats.cluster_bootstrap_cis(sums, counts, n_resamples=300, seed=7)
    times = np.random.default_rng(7).multinomial(6, np.full(6, 1 / 6), size=300)
    for j, v in enumerate((a, b)):
        means = []
        for draw in times:
            picked = np.concatenate([np.repeat(v[photos == p], n) for p, n in enumerate(draw)])
            picked = picked[np.isfinite(picked)]
            means.append(picked.mean() if len(picked) else np.nan)
        want = np.nanpercentile(means, [2.5, 97.5])
        assert (lo[j], hi[j]) == pytest.approx(tuple(want), abs=1e-12)
    assert (lo[0], hi[0]) == pytest.approx(stats.cluster_bootstrap_ci(a, photos, n_resamples=300, seed=7), abs=1e-12)


# --- checks.csv ----------------------------------------------------------------------------------

KEY = ["id", "class", "CNN", "size", "method", "test", "step", "measure", "steps", "seed"]


def test_checks_csv_has_one_row_per_value(tmp_path):
    make_run_dir(tmp_path, images=((1, "dog"), (2, "cat")), cnns=("resnet18",), sizes=("224",),
                 methods=("gradient", "gradcam"), pictures=False)
    rows = []
    for i, c in ((1, "dog"), (2, "cat")):
        for m in ("gradient", "gradcam"):
            base = {"id": i, "class": c, "CNN": "resnet18", "size": "224", "method": m, "steps": 4, "seed": 0}
            rows += [{**base, "test": "deletion", "measure": "prob", "step": s, "value": 1 - s / 4} for s in range(5)]
            rows += [{**base, "test": "deletion", "measure": "auc", "step": None, "value": 0.4 + i / 10}]
            rows += [{**base, "test": "randomisation", "measure": measure, "step": s, "value": 0.5 / s}
                     for measure in ("spearman", "ssim") for s in (1, 2)]
    write_checks(tmp_path, rows)
    from xcnn.experiment.export import write_exports

    write_exports(tmp_path)
    got = _csv(tmp_path / "checks.csv")
    assert len(got) == len(rows)
    frame = pd.DataFrame(got)
    assert not frame.duplicated(KEY).any()  # each row one value, named by its columns
    def key(row: dict) -> tuple:
        return tuple(float(row[k]) if k in ("id", "step", "steps", "seed") and row[k] not in (None, "")
                     else str(row[k] or "") for k in KEY)

    value_of = {key(r): r["value"] for r in rows}
    assert all(float(r["value"]) == pytest.approx(value_of[key(r)]) for r in got)
