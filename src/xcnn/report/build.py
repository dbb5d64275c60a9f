"""Builds RUN_DIR/report/: everything is checked first, the report is written aside
(RUN_DIR/report.tmp-PID) and swapped in whole at the end, so a failure never damages a good one."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xcnn.errors import XcnnError
from xcnn.runfolder import descriptions
from xcnn.runfolder.layout import FAILURES_FILE, RECORDS_FILE
from xcnn.files import slug, unit_stem
from xcnn.report import categories, check_figures, figures, files, grids, html, progress, stats, tables
from xcnn.report.run_info import RunInfo, read_config, reasons, run_info
from xcnn.runfolder.reading import current_checks

log = logging.getLogger(__name__)

REPORT = "report"
N_RESAMPLES = stats.N_RESAMPLES
SUMMARY_NOTE = (
    "Over records with a finite P: 'Records' and 'Photos' count them (the photo is the unit of "
    "independence: one photo gives records for several CNNs, sizes and categories). 95 % interval of the "
    f"mean: cluster bootstrap over photos ({N_RESAMPLES} resamples of the photos, each with all its records; "
    "seed 0; 2.5th–97.5th percentiles). Chance: area share of the dilated mask (the P of a uniform map); "
    "lift: P / chance; pointing game: share of maps whose most energetic pixel is in the mask; RMA: share of "
    "the unsquared |map| in the mask. Baselines (italic) are model-free maps scored like the methods on the "
    "same photos. " + tables.NAN_CAPTION
)
_SPLITS = [
    ("method", "table_7_1_methods", "Table 7.1 — energy concentration P per method"),
    ("CNN", "table_by_cnn", "P per method for each CNN"),
    ("size", "table_by_size", "P per method for each input size"),
    ("class", "table_by_category", "P per method for each category"),
]


def write_report(run_dir: Path, images: list | None, eps: bool = False) -> Path:
    """The report of RUN_DIR, its methods and metrics in the words of the run's own descriptions."""
    body = read_config(run_dir)  # a damaged config.json fails here, before anything is written
    with tables.describing(descriptions.of_run(run_dir)):
        return _write_report(run_dir, body, images, eps)


def _write_report(run_dir: Path, body: dict, images: list | None, eps: bool) -> Path:
    df, left_out = tables.load_run(run_dir)
    failed = progress.failure_reasons(run_dir)
    if df is None and not failed:
        raise tables.no_records(run_dir, left_out)
    if df is None and images:
        raise XcnnError(f"--images: every unit of {run_dir} failed, so there is no image to show; leave --images out")
    chosen = [] if df is None else grids.choose_images(df, images)  # a wrong --images fails here
    info = run_info(run_dir, df, body, left_out, from_jsonl=(run_dir / RECORDS_FILE).is_file())
    if df is None:  # every unit failed: a page that says so and why, instead of no report
        every = (f"every unit failed: {progress.units(sum(failed.values()))}, not one record ({reasons(failed, 3)}). "
                 f"Each failed unit is listed with its reason in {FAILURES_FILE}.")
        log.warning("%s: %s", run_dir, every)
        info.status.insert(0, every)
    _check_replaceable(run_dir / REPORT)
    _clear_stale(run_dir)
    tmp = run_dir / f"{REPORT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build(_Inputs(run_dir, df, info, chosen, images, eps), tmp)
        _swap(tmp, run_dir / REPORT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index = run_dir / REPORT / "index.html"
    log.info("report written to %s", index)
    return index


def _check_replaceable(report: Path) -> None:
    """Refuse to replace a report/ that xcnn did not write: it may hold a user's files."""
    if not os.path.lexists(report):
        return
    try:
        with open(report / "index.html", "rb") as f:
            ours = b"<title>xcnn report" in f.read(4096)
    except OSError:
        ours = False
    if not ours or report.is_symlink():
        raise XcnnError(f"{report} exists and is not an xcnn report; move it away, then make the report again")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale(run_dir: Path) -> None:
    """Folders left by a report that was killed while writing (its process is gone)."""
    for path in run_dir.glob(f"{REPORT}.*-*"):
        kind, _, pid = path.name.partition("-")
        if kind in (f"{REPORT}.tmp", f"{REPORT}.old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _swap(new: Path, dest: Path) -> None:
    """Old report renamed away, new renamed in, old deleted: at every moment a whole report
    exists under one of the two names."""
    old = dest.with_name(f"{REPORT}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if old.exists():
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class _Inputs:
    """What a report is built from, all checked before anything is written."""

    run_dir: Path
    df: pd.DataFrame | None
    info: RunInfo
    chosen: list  # the grids' images (grids.choose_images)
    images: list | None  # as asked for (--images), for the grids' note
    eps: bool


def _build(inputs: _Inputs, out: Path) -> None:
    run_dir, df, info = inputs.run_dir, inputs.df, inputs.info
    run_files = files.copy_run_files(run_dir, out)
    if df is None:
        failures = run_dir / FAILURES_FILE
        shutil.copyfile(failures, out / FAILURES_FILE)  # the page links it: report/ stays self-contained
        html.write_failed_index(out, info, progress.failure_reasons(run_dir), {**run_files, FAILURES_FILE: out / FAILURES_FILE})
        return
    views = tables.views(df)
    if "top5" not in views:
        info.facts.append(("Target in top 5", tables.views_note(df)))
    sections: list[html.TableSection] = []
    figs: list[figures.Figure] = []
    for view, frame in views.items():
        view_sections, view_figs = _view(frame, out, view, inputs.eps)
        sections += view_sections
        figs += view_figs
    checks = pd.DataFrame(current_checks(run_dir))
    figs += check_figures.write_check_figures(checks, out / "figures", inputs.eps)
    ranked = tables.rankings(views["all"], checks)
    figs += check_figures.write_ranks_figure(ranked, out / "figures", inputs.eps)
    log.info("wrote %d figures to %s", len(figs), run_dir / REPORT / "figures")  # where they will be
    numbers = tables.method_card(views["all"], checks, ranked)
    card_section = _card_section(numbers, views["all"], checks, ranked, out)
    means = _metric_means(numbers, out)
    if means is not None:
        sections.insert(0, means)
    grid_list = grids.write_grids(df, run_dir, out / "grids", inputs.chosen)
    cards = _gallery(run_dir, out, df)
    page = html.Page(info=info, df=df, views=list(views), card_table=card_section, tables=sections, figures=figs,
                     grids=grid_list, cards=cards, run_files=run_files, grid_note=grids.choice_note(df, inputs.images))
    html.write_index(out, page)


def _view(frame: pd.DataFrame, out: Path, view: str, eps: bool) -> tuple[list[html.TableSection], list[figures.Figure]]:
    """One view's tables (Table 7.1, the paired tests, the splits) and figures."""
    label = tables.VIEWS[view]
    suffix = "" if view == "all" else f"_{view}"
    summaries = tables.summaries(frame, n_resamples=N_RESAMPLES)
    view_sections = []
    for key, name, title in _SPLITS:
        shown = tables.table_for_display(summaries[key])
        caption = f"Records: {label.lower()}. {SUMMARY_NOTE} {tables.metrics_caption(list(shown.columns))}".strip()
        if key == "method":
            caption = f"The measure and layout of {tables.thesis('Table 7.1')}, on this run's records. {caption}"
        written = tables.write_table(shown, out / "tables", name + suffix, f"{title} ({label.lower()}). {caption}")
        # The splits are long: folded on the page, so Table 7.1 and the tests come first.
        view_sections.append(html.TableSection(f"{title} — {label.lower()}", caption, shown, written,
                                               folded=key != "method", view=view))
    view_sections[1:1] = _paired_sections(frame, out, view, label, suffix)
    return view_sections, figures.write_figures(frame, summaries, out / "figures", view, label.lower(), eps)


def _card_section(numbers: pd.DataFrame, df: pd.DataFrame, checks: pd.DataFrame, ranked: tables.Rankings,
                  out: Path) -> html.TableSection:
    """The method card: written as a table (two decimals), and shown narrow on the page."""
    card = tables.card_for_display(numbers)
    best = tables.best_baseline(df)
    checked = "; then the means of the validity checks the run made" if not tables.check_summary(checks).empty else ""
    conflicts = categories.sentences(ranked.conflicts)
    card_caption = " ".join(part for part in (
        "Per method and baseline, over all records: how its pictures are drawn, its paper, the records and photos "
        f"with a finite P, mean P and lift{checked}.",
        tables.win_caption(best) if best is not None else "",
        categories.caption(list(ranked.by_category.columns), len(ranked.ranks)),
        "The CSV adds the 95 % cluster-bootstrap interval over photos of every mean (columns '… 95 % CI low' and "
        "'… high'; check scores over the photos their rows are of).",
        tables.metrics_caption(list(card.columns)),
        tables.flags_caption(list(card.columns), "edges" in set(df["method"]))) if part)
    # Two decimals: the card is a summary to read at a glance; the CSV keeps full precision and
    # the win rate as two numbers.
    card_files = tables.write_table(card, out / "tables", "method_card", " ".join(["Method card.", *conflicts, card_caption]),
                                    digits=2, csv_table=tables.table_for_display(numbers))
    # On the page the card must fit 1280 px: short headers (explained in the caption), wrapped text.
    # The per-map metrics' means beyond 0.2's leave the page's card for the table below it (with
    # their intervals): with the six of Quantus's categories the card no longer fits 1280 px.
    metric_columns = [c for c in card.columns if c in {tables.metric_column(m) for m in tables.shown_metrics(df)}]
    shown_card = card.drop(columns=metric_columns)
    page_caption = f"{card_caption} {tables.card_headers_caption(list(shown_card.columns))}".strip()
    if metric_columns:
        page_caption += (" The means of the other per-map metrics are in the table 'Every metric per method' "
                         "(and in the CSV).")
    return html.TableSection("", page_caption, shown_card, card_files,
                             headers=tables.card_headers(list(shown_card.columns)), digits=2, css="compact",
                             wrap=("Reference", "Flags"), notes=tuple(conflicts))


def _metric_means(numbers: pd.DataFrame, out: Path) -> html.TableSection | None:
    """Every mean of the card with its interval (folded, first of the tables), when there is one."""
    tidy, wide = tables.metric_intervals(numbers)
    if tidy.empty:
        return None
    caption = ("Per method and baseline, over all records, every mean of the method card: mean [95 % "
               f"cluster-bootstrap interval over photos] (records with a finite P; check scores over their rows). "
               f"{tables.metrics_caption(list(wide.columns))}").strip()
    written = tables.write_table(wide, out / "tables", "metric_means", f"Every metric per method. {caption}",
                                 csv_table=tidy)
    return html.TableSection("Every metric per method — all records", caption, wide, written, folded=True)


def _paired_sections(frame: pd.DataFrame, out: Path, view: str, label: str, suffix: str) -> list[html.TableSection]:
    paired = tables.matched(frame)
    base = paired["method"].map(tables.is_baseline).to_numpy(dtype=bool)
    methods = tables.order_methods(set(paired.loc[~base, "method"]))
    n_pairs = len(methods) * (len(methods) - 1) // 2
    common = ("Per photo, the mean P of each method over the records both have (same photo, category, CNN and "
              "size, both P finite); the test compares these per-photo means. 'A wins': share of photos where "
              "A's mean is higher (a tie counts half). Two-sided Wilcoxon signed-rank test over photos.")
    caption = f"Records: {label.lower()}. {common} Holm-corrected over the {n_pairs} pairs of methods (one family)."
    table = tables.paired_for_display(stats.paired_comparison(paired, methods))
    written = tables.write_table(table, out / "tables", "paired_comparison" + suffix, f"Paired comparison. {caption}")
    out_sections = [html.TableSection(f"Paired comparison of methods — {label.lower()}", caption, table, written,
                                      folded=len(table) > 12, view=view)]
    best = tables.best_baseline(frame)
    if best is not None and methods:
        mean = float(np.nanmean(frame.loc[frame["method"] == best, "P"].to_numpy(dtype=float)))
        caption = (f"Records: {label.lower()}. Each method against the best baseline on these records, "
                   f"{tables.method_label(best)} (mean P {mean:.3f}). {common} Holm-corrected over the "
                   f"{len(methods)} methods (a family of its own).")
        table = tables.paired_for_display(stats.versus_baseline(paired, methods, best))
        written = tables.write_table(table, out / "tables", "paired_vs_baseline" + suffix,
                                     f"Methods against the best baseline. {caption}")
        out_sections.append(html.TableSection(f"Methods against the best baseline — {label.lower()}", caption,
                                              table, written, view=view))
    return out_sections


def _gallery(run_dir: Path, out: Path, df: pd.DataFrame) -> list[html.Card]:
    """Cards in P order, their pictures placed inside report/ as small WebP previews (relative
    links, self-contained)."""
    ordered = df.assign(_p=df["P"].fillna(-1)).sort_values(["_p", "method"], ascending=[False, True], kind="stable")
    photos: dict[tuple, Path | None] = {}
    cards = []
    for _, rec in ordered.iterrows():
        key = (rec["id"], rec["class"], rec["size"])
        if key not in photos:
            photo = files.inside(run_dir, rec["image_png"])
            dest = out / "photos" / slug(str(rec["size"])) / (unit_stem(str(rec["id"]), str(rec["class"])) + ".webp")
            ok = photo is not None and files.outlined_photo(photo, files.inside(run_dir, rec["mask_png"]), dest)
            photos[key] = dest if ok else None
        picture = files.inside(run_dir, rec["map_png"])
        placed = None
        if picture is not None:
            placed = (out / "maps" / picture.relative_to(run_dir.resolve())).with_suffix(".webp")
            if not placed.exists() and not files.preview(picture, placed):
                placed = None
        cards.append(html.Card(rec, photos[key], placed))
    return cards
