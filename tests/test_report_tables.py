"""Report tables and statistics against hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.report_fixture import CHANCE, make_run_dir
from xcnn.cli import main as cli_main
from xcnn.cli.report import parse_images
from xcnn.errors import XcnnError
from xcnn.report import stats, tables

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


def test_summary_exact_sums_and_means(tmp_path):
    df = _known(tmp_path)
    t = tables.summary_table(df)
    g = _row(t, method="gradient")
    assert g["Records"] == 4
    assert g["Sum of P"] == pytest.approx(0.1 + 0.3 + 0.5 + 0.7)
    assert g["Mean P"] == pytest.approx(0.4)
    assert g["Median P"] == pytest.approx(0.4)
    c = _row(t, method="gradcam")
    assert c["Sum of P"] == pytest.approx(2.0)
    assert c["Mean P"] == pytest.approx(0.5)
    assert c["Mean chance"] == pytest.approx(CHANCE)
    assert c["Mean lift"] == pytest.approx(0.5 / CHANCE)
    assert list(t["method"]) == ["gradient", "gradcam"]  # fixed order, not alphabetical
    # the fixture's pointing hit is P > 0.5 and its RMA equals P: gradient hits once in four
    assert g["Pointing (%)"] == pytest.approx(25.0)
    assert g["RMA"] == pytest.approx(0.4)


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
    assert g["Records"] == 2
    assert g["Sum of P"] == pytest.approx(0.4)
    assert g["Mean P"] == pytest.approx(0.2)
    assert g["NaN (reason)"] == "1 (all-zero map ×1)"
    shown = tables.table_for_display(t)
    md = tables.to_markdown(shown, tables.NAN_CAPTION)
    assert "| Gradient | 2 | 0.40 | 0.200 | 0.200 |" in md
    assert "NaN" in md.splitlines()[-1] and "left out" in md.splitlines()[-1]


def test_display_uses_words(tmp_path):
    df = _known(tmp_path)
    shown = tables.table_for_display(tables.summary_table(df, by="size"))
    assert list(shown["Method"]) == ["Gradient", "Grad-CAM"]
    assert set(shown["Size"]) == {"224×224 px"}
    assert tables.method_label("guided_backprop") == "Guided Backprop"
    assert tables.cnn_label("resnet18") == "ResNet-18"


def test_write_table_csv_round_trips(tmp_path):
    df = _known(tmp_path)
    files = tables.write_table(tables.table_for_display(tables.summary_table(df)), tmp_path, "t", "caption")
    back = pd.read_csv(files["csv"])
    assert back.loc[back["Method"] == "Gradient", "Sum of P"].item() == pytest.approx(1.6)
    assert files["md"].read_text().rstrip().endswith("caption")


def test_bootstrap_contains_mean_and_shrinks_with_more_records():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 20)
    large = rng.uniform(0, 1, 2000)
    lo_s, hi_s = stats.bootstrap_ci(small)
    lo_l, hi_l = stats.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    # width goes like 1/sqrt(n): 100× the records -> about a tenth of the width
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert stats.bootstrap_ci(small) == (lo_s, hi_s)  # fixed seed: reproducible
    assert stats.bootstrap_ci(np.full(7, 0.25)) == pytest.approx((0.25, 0.25))
    assert all(math.isnan(v) for v in stats.bootstrap_ci(np.array([])))


def test_bootstrap_interval_matches_normal_theory():
    # For the mean of uniform(0,1), sd = 1/sqrt(12); the 95 % half-width is 1.96·sd/sqrt(n).
    x = np.random.default_rng(2).uniform(0, 1, 3000)
    lo, hi = stats.bootstrap_ci(x, n_resamples=4000)
    assert (hi - lo) / 2 == pytest.approx(1.96 / math.sqrt(12) / math.sqrt(3000), rel=0.1)


def test_holm_textbook_values():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max so far 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = stats.holm([0.01, NAN, 0.04])  # NaN is no test: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_paired_comparison_win_rate_and_exact_wilcoxon(tmp_path):
    # gradcam beats gradient on all 6 pairs, distinct differences: exact two-sided p = 2 / 2**6
    grad = [0.10, 0.20, 0.30, 0.15, 0.25, 0.05]
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]

    def p_of(image_id, category, cnn, size, method):
        base = grad[image_id - 1]
        return base + diffs[image_id - 1] if method == "gradcam" else base

    make_run_dir(tmp_path, p_of, images=tuple((i, "dog") for i in range(1, 7)), cnns=("a",), sizes=("224",),
                 methods=("gradient", "gradcam"), pictures=False)
    out = stats.paired_comparison(tables.load_records(tmp_path), ["gradient", "gradcam"])
    row = out.iloc[0]
    assert (row["method A"], row["method B"], row["Pairs"]) == ("gradient", "gradcam", 6)
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
    assert row["Pairs"] == 2
    assert row["A wins"] == pytest.approx(0.75)  # one win, one tie


def test_wilcoxon_all_ties_is_one():
    assert stats.wilcoxon_p(np.zeros(5)) == 1.0


def test_loader_ignores_torn_last_line(tmp_path):
    records = _known(tmp_path)
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"id": 9, "class": "dog", "meth')  # crash in the middle of a write
    assert len(tables.load_records(tmp_path)) == len(records)


def test_loader_drops_an_incomplete_last_unit(tmp_path):
    _known(tmp_path)  # units of 2 records (gradient, gradcam)
    path = tmp_path / "records.jsonl"
    extra = json.loads(path.read_text().splitlines()[0])
    extra.update(id=7, P=0.9)  # the first record of a unit whose second one never reached the disk
    with open(path, "a") as f:
        f.write(json.dumps(extra) + "\n" + '{"id": 7, "cla')
    df = tables.load_records(tmp_path)
    assert len(df) == 8 and 7 not in set(df["id"])


def test_loader_reads_null_p_as_nan(tmp_path):
    _known(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["P"] = None  # the store writes NaN as null
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert tables.load_records(tmp_path)["P"].isna().sum() == 1


def test_loader_rejects_corrupt_middle_line(tmp_path):
    _known(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(XcnnError, match="line 3"):
        tables.load_records(tmp_path)


def test_csv_fallback_gives_same_table(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _known(a)
    _known(b, csv=True, jsonl=False)
    assert not (b / "records.jsonl").exists()
    ta, tb = tables.summary_table(tables.load_records(a)), tables.summary_table(tables.load_records(b))
    pd.testing.assert_frame_equal(ta, tb)


def test_missing_or_empty_run_dir_is_one_line_error(tmp_path):
    with pytest.raises(XcnnError, match="nowhere") as err:
        tables.load_records(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError, match="no records.jsonl or records.csv"):
        tables.load_records(tmp_path)
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(XcnnError, match="no readable config.json"):
        tables.load_records(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"methods": ["gradient"]}}))
    with pytest.raises(XcnnError, match="holds no records"):
        tables.load_records(tmp_path)


def test_records_without_required_columns_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": {"methods": ["gradient"]}}))
    record = {"id": 1, "class": "dog", "CNN": "resnet18", "size": "224", "method": "gradient"}  # no P
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(XcnnError, match="lacks the column.*P"):
        tables.load_records(tmp_path)


def test_cli_report_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err


def test_cli_parse_images():
    assert parse_images(None) is None
    assert parse_images("139, 785:traffic light") == [139, (785, "traffic light")]
    with pytest.raises(XcnnError, match="abc"):
        parse_images("139,abc")
