"""Report layer: reads RUN_DIR only and writes RUN_DIR/report/ (tables, figures, grids, index.html)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["write_report"]


def write_report(run_dir: Path, images: list[int | tuple[int, str]] | None = None) -> Path:
    """Write RUN_DIR/report/ and return the path of its index.html.

    `images` picks the images of the grids: ids (every category of that image) or (id, category)
    pairs; None takes the first few (image, category) pairs by id.
    """
    # Imported here so `import xcnn.report` stays cheap for callers that only need the name.
    from xcnn.report import figures, grids, html, stats, tables

    run_dir = Path(run_dir)
    df = tables.load_records(run_dir)
    report_dir = run_dir / "report"
    table_dir = report_dir / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    for generated in ("figures", "grids"):  # wholly ours: drop pictures of an earlier report (other --images)
        shutil.rmtree(report_dir / generated, ignore_errors=True)

    summaries = tables.summaries(df)
    mean_note = ("Mean, median, 95 % interval (percentile bootstrap of the mean, 2000 resamples, seed 0), "
                 "chance level (area share of the dilated mask), lift (P / chance), pointing game (share of maps "
                 "whose most energetic pixel is in the mask) and RMA (relevance mass accuracy: share of the "
                 "unsquared |map| in the mask) are over records with a finite P. " + tables.NAN_CAPTION)
    sections = []
    for key, name, title in [
        ("method", "table_7_1_methods", "Table 7.1 — energy concentration P per method"),
        ("CNN", "table_by_cnn", "P per method for each CNN"),
        ("size", "table_by_size", "P per method for each input size"),
        ("class", "table_by_category", "P per method for each category"),
    ]:
        shown = tables.table_for_display(summaries[key])
        files = tables.write_table(shown, table_dir, name, f"{title}. {mean_note}")
        # The splits are long: folded on the page, so Table 7.1 and the tests come first.
        sections.append(html.TableSection(title, mean_note, shown, files, folded=key != "method"))

    paired = tables.paired_for_display(stats.paired_comparison(df, tables.order_methods(set(df["method"]))))
    paired_caption = ("Pairs: the same image, category, CNN and size; pairs with a NaN P are dropped. "
                      "'A wins' counts a tie as half. Two-sided Wilcoxon signed-rank test, p-values "
                      "Holm-corrected over all method pairs.")
    files = tables.write_table(paired, table_dir, "paired_comparison", f"Paired comparison of methods. {paired_caption}")
    sections.insert(1, html.TableSection("Paired comparison of methods", paired_caption, paired, files))

    figs = figures.write_figures(df, summaries, report_dir / "figures")
    grid_list = grids.write_grids(df, run_dir, report_dir / "grids", images)
    index = html.write_index(run_dir, report_dir, df, sections, figs, grid_list)
    log.info("report written to %s", index)
    return index
