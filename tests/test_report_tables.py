"""Report tables and statistics against hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.report_fixture import BASELINES, CHANCE, make_run_dir, rewrite_records
from xcnn.cli.report import main as report_main
from xcnn.cli.report import parse_images
from xcnn.errors import XcnnError
from xcnn.report import stats, tables
from xcnn.report.run_info import run_info

NAN = float("nan")


def _known(run_dir: Path, **kw) -> pd.DataFrame:
    """Two methods, two CNNs, one size: gradient P = 0.1, 0.3 (cnn a) and 0.5, 0.7 (cnn b)."""
    values = {
        ("a", "gradient"): [0.1, 0.3], ("b", "gradient"): [0.5, 0.7],
        ("a", "gradcam"): [0.2, 0.6], ("b", "gradcam"): [0.4, 0.8],
    }

    def p_of(image_id, category, cnn, size, method):
        return values[(cnn, method)][image_id - 1]

    make_run_dir(run_dir, p_of, images=((1, "dog"), (2, "cat")), cnns=("a", "b"), sizes=("224",),
                 methods=("gradient", "gradcam"), pictures=False, **kw)
    return tables.load_records(run_dir)


def _row(table: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(table), bool)
    for col, value in where.items():
        mask &= (table[col] == value).to_numpy()
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


# --- summaries ----------------------------------------------------------------------------------

def test_summary_exact_sums_and_means(tmp_path):
    df = _known(tmp_path)
    t = tables.summary_table(df)
    g = _row(t, method="gradient")
    assert (g["Records"], g["Photos"]) == (4, 2)  # two photos, each seen by two CNNs
    assert g["Sum of P"] == pytest.approx(0.1 + 0.3 + 0.5 + 0.7)
    assert g["Mean P"] == pytest.approx(0.4)
    assert g["Median P"] == pytest.approx(0.4)
    c = _row(t, method="gradcam")
    assert c["Sum of P"] == pytest.approx(2.0)
    assert c["Mean P"] == pytest.approx(0.5)
    assert c["Mean chance"] == pytest.approx(CHANCE)
    assert c["Mean lift"] == pytest.approx(0.5 / CHANCE)
    assert list(t["method"]) == ["gradient", "gradcam"]  # registry order, not alphabetical
    # the fixture's pointing hit is P > 0.5 and its RMA equals P: gradient hits once in four
    assert g["Pointing (%)"] == pytest.approx(25.0)
    assert g["RMA"] == pytest.approx(0.4)


def test_interval_is_the_cluster_bootstrap_over_photos(tmp_path):
    df = _known(tmp_path)
    g = _row(tables.summary_table(df, n_resamples=500), method="gradient")
    part = df[df["method"] == "gradient"]
    expected = stats.cluster_bootstrap_ci(part["P"].to_numpy(), part["id"].to_numpy(), n_resamples=500)
    assert (g["95 % CI low"], g["95 % CI high"]) == pytest.approx(expected)
    # photo 1 has mean 0.3, photo 2 mean 0.5: every resample's mean is one of 0.3, 0.4, 0.5
    assert g["95 % CI low"] == pytest.approx(0.3) and g["95 % CI high"] == pytest.approx(0.5)


def test_pointing_game_read_back_from_csv(tmp_path):
    df = _known(tmp_path)
    (tmp_path / "csvrun").mkdir()
    df.assign(pointing_hit=df["pointing_hit"].map({1.0: "True", 0.0: "False"})).to_csv(
        tmp_path / "csvrun" / "records.csv", index=False)
    again = tables.load_records(tmp_path / "csvrun")
    assert again["pointing_hit"].tolist() == df["pointing_hit"].tolist()


def test_summary_splits_by_cnn_and_category(tmp_path):
    df = _known(tmp_path)
    by_cnn = tables.summary_table(df, by="CNN")
    assert _row(by_cnn, CNN="a", method="gradient")["Sum of P"] == pytest.approx(0.4)
    assert _row(by_cnn, CNN="a", method="gradient")["Mean P"] == pytest.approx(0.2)
    assert _row(by_cnn, CNN="b", method="gradient")["Mean P"] == pytest.approx(0.6)
    by_cat = tables.summary_table(df, by="class")
    # image 1 is the dog: gradient 0.1 (a) and 0.5 (b)
    assert _row(by_cat, **{"class": "dog", "method": "gradient"})["Mean P"] == pytest.approx(0.3)
    assert _row(by_cat, **{"class": "cat", "method": "gradcam"})["Mean P"] == pytest.approx(0.7)
    by_size = tables.summary_table(df, by="size")
    assert _row(by_size, size="224", method="gradcam")["Records"] == 4


def test_nan_counted_separately_and_left_out_of_means(tmp_path):
    values = {1: 0.1, 2: NAN, 3: 0.3}
    make_run_dir(tmp_path, lambda i, *_: values[i], images=((1, "dog"), (2, "dog"), (3, "dog")),
                 cnns=("a",), sizes=("224",), methods=("gradient",), pictures=False)
    t = tables.summary_table(tables.load_records(tmp_path))
    g = _row(t, method="gradient")
    assert (g["Records"], g["Photos"]) == (2, 2)
    assert g["Sum of P"] == pytest.approx(0.4)
    assert g["Mean P"] == pytest.approx(0.2)
    assert g["NaN (reason)"] == "1 (all-zero map ×1)"
    shown = tables.table_for_display(t)
    md = tables.to_markdown(shown, tables.NAN_CAPTION)
    assert "| Gradient | 2 | 2 | 0.40 | 0.200 | 0.200 |" in md
    assert "NaN" in md.splitlines()[-1] and "left out" in md.splitlines()[-1]


def test_display_uses_registry_words(tmp_path):
    df = _known(tmp_path)
    shown = tables.table_for_display(tables.summary_table(df, by="size"))
    assert list(shown["Method"]) == ["Gradient", "Grad-CAM"]
    assert set(shown["Size"]) == {"224×224 px"}
    assert tables.method_label("guided_backprop") == "Guided Backprop"
    assert tables.method_label("gradcam_pp") == "Grad-CAM++"
    assert tables.method_label("centre") == "Centre (baseline)"
    assert tables.cnn_label("resnet18") == "ResNet-18"
    assert tables.order_methods({"edges", "smoothgrad", "gradient", "zzz"}) == ["gradient", "smoothgrad", "edges", "zzz"]


def test_write_table_csv_round_trips(tmp_path):
    df = _known(tmp_path)
    files = tables.write_table(tables.table_for_display(tables.summary_table(df)), tmp_path, "t", "caption")
    back = pd.read_csv(files["csv"])
    assert back.loc[back["Method"] == "Gradient", "Sum of P"].item() == pytest.approx(1.6)
    assert files["md"].read_text().rstrip().endswith("caption")


# --- baselines and views ------------------------------------------------------------------------

def _with_baselines(run_dir: Path, rank_of=None) -> pd.DataFrame:
    """Photos 1..4 (dog), CNNs a and b, sizes 224; baselines uniform = 0.16, centre = 0.3, edges = 0.2."""
    base = {"uniform": 0.16, "centre": 0.3, "edges": 0.2}

    def p_of(image_id, category, cnn, size, method):
        return base[method] if cnn == "none" else 0.4 + 0.1 * image_id + (0.05 if method == "gradcam" else 0)

    make_run_dir(run_dir, p_of, images=tuple((i, "dog") for i in range(1, 5)), cnns=("a", "b"), sizes=("224",),
                 methods=("gradient", "gradcam"), baselines=BASELINES, rank_of=rank_of, pictures=False)
    return tables.load_records(run_dir)


def test_baselines_sit_beside_methods_and_under_every_cnn(tmp_path):
    df = _with_baselines(tmp_path)
    t = tables.summary_table(df)
    assert list(t["method"]) == ["gradient", "gradcam", "uniform", "centre", "edges"]
    assert (_row(t, method="centre")["Records"], _row(t, method="centre")["Photos"]) == (4, 4)
    by_cnn = tables.summary_table(df, by="CNN")
    assert set(by_cnn["CNN"]) == {"a", "b"}  # no "none" group: each CNN shows the baselines of its photos
    assert _row(by_cnn, CNN="a", method="centre")["Mean P"] == pytest.approx(0.3)
    assert tables.best_baseline(df) == "centre"
    shown = tables.table_for_display(t)
    assert shown["Method"].iloc[-1] == "Edges (baseline)"


def test_top5_view_keeps_ranked_records_and_their_baselines(tmp_path):
    # CNN b ranks photo 1's target 9th: that record leaves the view, its baselines stay (CNN a keeps photo 1);
    # both CNNs rank photo 2's target 7th: photo 2 leaves, baselines and all.
    df = _with_baselines(tmp_path, rank_of=lambda i, c, cnn: {(1, "b"): 9, (2, "a"): 7, (2, "b"): 7}.get((i, cnn), 1))
    v = tables.views(df)
    assert set(v) == {"all", "top5"}
    top = v["top5"]
    methods = top[~top["method"].map(tables.is_baseline)]
    assert sorted(set(zip(methods["id"], methods["CNN"]))) == [(1, "a"), (3, "a"), (3, "b"), (4, "a"), (4, "b")]
    assert sorted(set(top.loc[top["method"] == "uniform", "id"])) == [1, 3, 4]
    by_cnn = tables.summary_table(top, by="CNN")
    assert _row(by_cnn, CNN="b", method="uniform")["Photos"] == 2  # b's photos in view: 3 and 4
    assert tables.views_note(df) == ""


def test_top5_view_left_out_when_it_equals_all_or_ranks_are_unknown(tmp_path):
    df = _with_baselines(tmp_path)
    assert set(tables.views(df)) == {"all"}
    assert "equals all records" in tables.views_note(df)
    assert "do not say" in tables.views_note(df.assign(target_rank=np.nan))


def test_method_card_shows_optional_measurements_only_when_recorded(tmp_path):
    df = _with_baselines(tmp_path)
    card = tables.method_card(df)
    assert list(card["method"]) == ["gradient", "gradcam", "uniform", "centre", "edges"]
    assert list(card["Picture"]) == ["grey", "heat", "heat", "heat", "heat"]
    assert list(card["Kind"])[-1] == "baseline"
    assert not any(label in card.columns for label in tables.CARD_FIELDS.values())
    card = tables.method_card(df.assign(deletion_auc=np.where(df["method"] == "gradient", 0.25, np.nan)))
    assert _row(card, method="gradient")["Deletion AUC (lower is better)"] == pytest.approx(0.25)
    assert "Insertion AUC (higher is better)" not in card.columns


# --- statistics ---------------------------------------------------------------------------------

def test_bootstrap_contains_mean_and_shrinks_with_more_records():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 20)
    large = rng.uniform(0, 1, 2000)
    for ci in (stats.bootstrap_ci, lambda x: stats.cluster_bootstrap_ci(x, np.arange(len(x)))):
        lo_s, hi_s = ci(small)
        lo_l, hi_l = ci(large)
        assert lo_s < small.mean() < hi_s
        assert lo_l < large.mean() < hi_l
        assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(n)
        assert ci(small) == (lo_s, hi_s)  # fixed seed: reproducible
    assert stats.cluster_bootstrap_ci(np.full(7, 0.25), np.arange(7)) == pytest.approx((0.25, 0.25))
    assert all(math.isnan(v) for v in stats.cluster_bootstrap_ci(np.array([]), np.array([])))


def test_cluster_bootstrap_matches_normal_theory_with_one_record_per_photo():
    # For the mean of uniform(0,1), sd = 1/sqrt(12); the 95 % half-width is 1.96·sd/sqrt(n).
    x = np.random.default_rng(2).uniform(0, 1, 3000)
    lo, hi = stats.cluster_bootstrap_ci(x, np.arange(3000), n_resamples=4000)
    assert (hi - lo) / 2 == pytest.approx(1.96 / math.sqrt(12) / math.sqrt(3000), rel=0.1)


def test_duplicated_records_widen_nothing_for_the_cluster_bootstrap_but_fool_the_naive_one():
    """Known answer: copying each photo's records 4 times adds no information. The cluster
    interval must not narrow (it stays or widens); the naive one narrows by about half."""
    rng = np.random.default_rng(3)
    photos = np.repeat(np.arange(40), 3)  # 40 photos, 3 records each (CNNs), sharing a photo effect
    p = np.clip(rng.normal(0.4, 0.15, 40)[photos] + rng.normal(0, 0.05, len(photos)), 0, 1)
    dup_p, dup_photos = np.tile(p, 4), np.tile(photos, 4)
    lo, hi = stats.cluster_bootstrap_ci(p, photos)
    dlo, dhi = stats.cluster_bootstrap_ci(dup_p, dup_photos)
    assert dhi - dlo >= (hi - lo) - 1e-12
    nlo, nhi = stats.bootstrap_ci(p)
    ndlo, ndhi = stats.bootstrap_ci(dup_p)
    assert ndhi - ndlo < 0.6 * (nhi - nlo)
    # with a shared photo effect, records are not independent: the honest interval is the wider one
    assert hi - lo > 1.3 * (nhi - nlo)


def test_holm_textbook_values():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max so far 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = stats.holm([0.01, NAN, 0.04])  # NaN is no test: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_paired_test_runs_on_per_photo_means(tmp_path):
    # 6 photos × 2 CNNs. gradcam beats gradient on each photo's mean, by distinct amounts: the
    # exact two-sided p over 6 photos is 2 / 2**6 (over 12 records it would be 2 / 2**12).
    grad = [0.10, 0.20, 0.30, 0.15, 0.25, 0.05]
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]

    def p_of(image_id, category, cnn, size, method):
        base = grad[image_id - 1] + (0.1 if cnn == "b" else 0.0)
        return base + diffs[image_id - 1] if method == "gradcam" else base

    make_run_dir(tmp_path, p_of, images=tuple((i, "dog") for i in range(1, 7)), cnns=("a", "b"), sizes=("224",),
                 methods=("gradient", "gradcam"), pictures=False)
    out = stats.paired_comparison(tables.load_records(tmp_path), ["gradient", "gradcam"])
    row = out.iloc[0]
    assert (row["method A"], row["method B"], row["Photos"], row["Records"]) == ("gradient", "gradcam", 6, 12)
    assert row["A wins"] == 0.0
    assert row["Mean ΔP (A − B)"] == pytest.approx(-0.035)
    assert row["Wilcoxon p"] == pytest.approx(2 / 64)
    assert row["Holm-adjusted p"] == pytest.approx(2 / 64)  # one test: unchanged


def test_paired_comparison_drops_nan_pairs_and_counts_ties_half(tmp_path):
    table = {(1, "gradient"): 0.2, (1, "gradcam"): 0.2, (2, "gradient"): 0.5, (2, "gradcam"): 0.1,
             (3, "gradient"): 0.4, (3, "gradcam"): NAN}
    make_run_dir(tmp_path, lambda i, c, n, s, m: table[(i, m)], images=((1, "dog"), (2, "dog"), (3, "dog")),
                 cnns=("a",), sizes=("224",), methods=("gradient", "gradcam"), pictures=False)
    row = stats.paired_comparison(tables.load_records(tmp_path), ["gradient", "gradcam"]).iloc[0]
    assert (row["Photos"], row["Records"]) == (2, 2)
    assert row["A wins"] == pytest.approx(0.75)  # one win, one tie


def test_two_holm_families_methods_and_best_baseline(tmp_path):
    df = tables.matched(_with_baselines(tmp_path))
    methods = ["gradient", "gradcam"]
    among = stats.paired_comparison(df, methods)
    versus = stats.versus_baseline(df, methods, "centre")
    assert len(among) == 1 and len(versus) == 2
    assert list(versus["method B"]) == ["centre", "centre"]
    # gradient: per photo 0.4 + 0.1·i vs 0.3, 4 photos all won: exact p = 2 / 2**4, Holm over 2 tests
    g = versus.iloc[0]
    assert (g["Photos"], g["Records"], g["A wins"]) == (4, 8, 1.0)
    assert g["Wilcoxon p"] == pytest.approx(2 / 16)
    assert versus["Holm-adjusted p"].tolist() == pytest.approx([0.25, 0.25])
    assert stats.versus_baseline(df, methods, "no_such_baseline").empty


def test_wilcoxon_all_ties_is_one():
    assert stats.wilcoxon_p(np.zeros(5)) == 1.0


# --- loading ------------------------------------------------------------------------------------

def test_loader_ignores_torn_last_line(tmp_path):
    records = _known(tmp_path)
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"id": 9, "class": "dog", "meth')  # crash in the middle of a write
    assert len(tables.load_records(tmp_path)) == len(records)


def test_loader_drops_an_incomplete_last_write(tmp_path):
    _known(tmp_path)  # one write per unit of 2 records (gradient, gradcam)
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # the last unit's second record never reached the disk
    df = tables.load_records(tmp_path)
    assert len(df) == 6


def test_loader_reads_null_p_as_nan(tmp_path):
    _known(tmp_path)
    from xcnn.runfolder.reading import read_records

    lines = read_records(tmp_path)
    lines[0]["P"] = None  # the store writes NaN as null
    rewrite_records(tmp_path, lines)
    assert tables.load_records(tmp_path)["P"].isna().sum() == 1


def test_loader_rejects_corrupt_middle_line(tmp_path):
    _known(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(XcnnError, match="line 3"):
        tables.load_records(tmp_path)


def test_a_deleted_line_in_the_middle_is_refused_like_xcnn_run_does(tmp_path, capsys):
    _known(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))  # the second unit lost its first record
    with pytest.raises(XcnnError, match="records.jsonl") as err:
        tables.load_records(tmp_path)
    assert "\n" not in str(err.value)
    assert report_main([str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_csv_fallback_gives_same_table(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _known(a)
    _known(b, csv=True, jsonl=False)
    assert not (b / "records.jsonl").exists()
    ta, tb = tables.summary_table(tables.load_records(a)), tables.summary_table(tables.load_records(b))
    pd.testing.assert_frame_equal(ta, tb)


def test_photo_ids_may_be_text(tmp_path):
    df = _known(tmp_path).assign(id=lambda d: d["id"].map({1: "shots/a.jpg", 2: "shots/b.jpg"}))
    t = tables.summary_table(df)
    assert _row(t, method="gradient")["Photos"] == 2


def test_missing_or_empty_run_dir_is_one_line_error(tmp_path):
    with pytest.raises(XcnnError, match="nowhere") as err:
        tables.load_records(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError, match="no records.jsonl or records.csv"):
        tables.load_records(tmp_path)
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(XcnnError, match="config.json"):
        tables.load_records(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"methods": ["gradient"]}}))
    with pytest.raises(XcnnError, match="holds no records"):
        tables.load_records(tmp_path)


def test_records_without_required_columns_are_refused(tmp_path):
    records = make_run_dir(tmp_path, images=((1, "dog"),), cnns=("a",), sizes=("224",), methods=("gradient",),
                           pictures=False)
    rewrite_records(tmp_path, [{k: v for k, v in r.items() if k != "P"} for r in records])
    with pytest.raises(XcnnError, match="lacks the column.*P"):
        tables.load_records(tmp_path)


# --- run details --------------------------------------------------------------------------------

def test_run_info_notes_a_mix_of_versions(tmp_path):
    df = _known(tmp_path)
    info = run_info(tmp_path, df, from_jsonl=True)
    facts = dict(info.facts)
    assert facts["Photos and records"] == "2 photos · 8 records"
    assert facts["Versions"] == "xcnn 0.1.0"  # from config.json: the records do not say
    assert "features.18" not in facts.get("Models", "")  # that layer belongs to a model this run lacks
    assert not info.notes
    mixed = df.assign(xcnn=np.where(df["id"] == 1, "0.1.0", "0.2.0"))
    info = run_info(tmp_path, mixed, from_jsonl=True)
    assert any("several xcnn versions" in n and "0.2.0 (4 records)" in n for n in info.notes)


def test_run_info_warns_about_lines_the_reader_left_out(tmp_path):
    df = _known(tmp_path)
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"id": 3, "class": "dog", "CNN": "a", "size": "224", "method": "gradient", "P": 0.5}\n')
    info = run_info(tmp_path, df, from_jsonl=True)
    assert any("1 line(s) of records.jsonl" in n for n in info.notes)


def test_run_info_states_the_target_filter_and_how_many_units_it_left_out(tmp_path):
    df = _known(tmp_path)
    assert "Target filter" not in dict(run_info(tmp_path, df, from_jsonl=True).facts)  # no filter, no line
    body = json.loads((tmp_path / "config.json").read_text())
    body.setdefault("config", {})["max_target_rank"] = 5
    (tmp_path / "config.json").write_text(json.dumps(body))
    (tmp_path / "filtered.jsonl").write_text('{"id": 1, "target_rank": 9}\n{"id": 2, "target_rank": 7}\n')
    facts = dict(run_info(tmp_path, df, from_jsonl=True).facts)
    assert facts["Target filter"].startswith("only targets in the model's top 5")
    assert "2 (CNN, size, photo, category) units left out" in facts["Target filter"]


# --- command line -------------------------------------------------------------------------------

def test_cli_report_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err


def test_cli_parse_images():
    assert parse_images(None) is None
    assert parse_images("139, 785:traffic light") == [139, (785, "traffic light")]
    assert parse_images("shots/a.jpg:dog") == [("shots/a.jpg", "dog")]
    with pytest.raises(XcnnError, match="empty"):
        parse_images(" , ")
    with pytest.raises(XcnnError, match="names no image"):
        parse_images(":dog")


def test_method_card_summarises_the_checks_and_flags_in_plain_words() -> None:
    from xcnn.report.tables import method_card

    recs = []
    for i in range(3):
        for method, p in (("gradient", 0.6), ("deconvnet", 0.5), ("gradcam", 0.7)):
            recs.append({"id": i, "class": "dog", "CNN": "net", "size": "224", "method": method, "P": p,
                         "lift": p / 0.3, "chance": 0.3})
        recs.append({"id": i, "class": "dog", "CNN": "none", "size": "224", "method": "edges", "P": 0.55,
                     "lift": 0.55 / 0.3, "chance": 0.3})
    checks = []
    for method, inp, rand in (("gradient", 0.1, 0.2), ("deconvnet", 1.0, 0.1), ("gradcam", 0.2, 0.6)):
        checks.append({"method": method, "test": "input", "measure": "spearman", "step": None, "value": inp})
        checks.append({"method": method, "test": "randomisation", "measure": "spearman", "step": 5, "value": rand})
        checks.append({"method": method, "test": "randomisation", "measure": "spearman", "step": 1, "value": 0.99})
    card = method_card(pd.DataFrame(recs), pd.DataFrame(checks)).set_index("method")
    assert card.loc["deconvnet", "Input dependence"] == 1.0
    assert card.loc["gradcam", "Similarity after full randomisation"] == 0.6  # the last step, not the first
    assert card.loc["deconvnet", "Flags"] == "does not depend on the photo; no better than an edge detector"
    assert card.loc["gradcam", "Flags"] == "insensitive to the model's weights"
    assert card.loc["gradient", "Flags"] == "" and card.loc["edges", "Flags"] == ""
    assert "Input dependence" not in method_card(pd.DataFrame(recs)).columns  # no checks, no columns


# --- win rate against the best baseline (method card) -------------------------------------------

def _win_records() -> pd.DataFrame:
    """4 photos, one CNN, one size. Centre has the highest baseline mean (0.5 vs 0.475 and 0.05);
    Gradient beats it on photos 1–3 and loses on 4; Grad-CAM has a NaN on photo 2."""
    p = {"gradient": [0.6, 0.7, 0.8, 0.2], "gradcam": [0.4, NAN, 0.6, 0.7],
         "uniform": [0.75, 0.75, 0.1, 0.3], "centre": [0.5, 0.5, 0.5, 0.5], "edges": [0.05] * 4}
    return pd.DataFrame([{"id": i + 1, "class": "dog", "size": "224", "method": m,
                          "CNN": "none" if tables.is_baseline(m) else "net", "P": v[i], "chance": 0.25,
                          "lift": v[i] / 0.25} for m, v in p.items() for i in range(4)])


def test_win_rate_counts_photos_won_against_the_best_baseline() -> None:
    df = _win_records()
    assert tables.best_baseline(df) == "centre"  # not uniform (Gradient wins 1 of 4) nor edges (4 of 4)
    card = tables.method_card(df).set_index("method")
    assert card.loc["gradient", tables.WIN] == pytest.approx(75.0)
    assert card.loc["gradient", tables.WIN_PHOTOS] == 4
    assert card.loc["gradcam", tables.WIN] == pytest.approx(200 / 3)  # photo 2 left out: 2 of 3
    assert card.loc["gradcam", tables.WIN_PHOTOS] == 3
    assert card.loc[["uniform", "centre", "edges"], tables.WIN].isna().all()  # a baseline has no win rate
    # the card's numbers are those of the paired test against the best baseline
    versus = stats.versus_baseline(tables.matched(df), ["gradient", "gradcam"], "centre").set_index("method A")
    assert card.loc["gradient", tables.WIN] == pytest.approx(100 * versus.loc["gradient", "A wins"])
    shown = tables.card_for_display(tables.method_card(df)).set_index("Method")
    assert shown[tables.WIN_CELL].tolist() == ["3 of 4", "2 of 3", "—", "—", "—"]
    assert "Kind" not in shown.columns and tables.WIN not in shown.columns
    assert "Centre (baseline)" in tables.win_caption("centre")


def test_no_baselines_no_win_rate() -> None:
    df = _win_records()
    card = tables.method_card(df[~df["method"].map(tables.is_baseline)])
    assert tables.WIN not in card.columns
    assert tables.WIN_CELL not in tables.card_for_display(card).columns


def test_card_markdown_has_two_decimals_and_full_headers(tmp_path: Path) -> None:
    df = _win_records()
    card = tables.method_card(df)
    files = tables.write_table(tables.card_for_display(card), tmp_path, "card", "caption", digits=2,
                               csv_table=tables.table_for_display(card))
    md = files["md"].read_text()
    assert "| Gradient | grey | Simonyan et al. 2013 | 4 | 4 | 0.57 | 2.30 | 3 of 4 |" in md
    back = pd.read_csv(files["csv"])  # the CSV keeps the win rate as numbers
    assert back.loc[0, tables.WIN] == pytest.approx(75.0) and back.loc[0, tables.WIN_PHOTOS] == 4
    assert "Lift: Mean lift" in tables.card_headers_caption(["Method", "Mean lift"])
