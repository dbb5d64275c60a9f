"""index.html: one self-contained page (inline CSS, a little inline JS for the gallery's sort,
filters and pages, pictures by relative path inside report/) that explains itself: what P is, the
run, how pictures are drawn, the method card, tables, figures, grids and a gallery of every map,
PAGE_SIZE cards at a time (the filters and the sort act on every card, then the pages divide what
matches)."""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from xcnn.report.figures import Figure, heat_stops, method_color
from xcnn.report.files import RUN_FILES
from xcnn.report.grids import Grid
from xcnn.report.page_text import CSS, FAILED_PAGE, GALLERY_NOTE, GRID_NOTE, JS, PAGE, PAGE_SIZE, PAGER
from xcnn.report.run_info import RunInfo
from xcnn.report.tables import (
    THESIS,
    TOP_K,
    VIEWS,
    cnn_label,
    described,
    format_cells,
    is_baseline,
    method_label,
    order_ids,
    order_methods,
    order_sizes,
    size_label,
)
from xcnn.runfolder.layout import FAILURES_FILE

log = logging.getLogger(__name__)

@dataclass
class TableSection:
    title: str
    caption: str
    table: pd.DataFrame  # already in words (table_for_display / paired_for_display)
    files: dict[str, Path]
    folded: bool = False  # shown inside a closed <details>
    view: str = "all"
    headers: dict[str, str] = field(default_factory=dict)  # short header shown for a column, full name as tooltip
    digits: int = 3  # decimals of plain numbers
    css: str = ""  # extra class of the table's box ("compact": smaller font, headers may wrap)
    wrap: tuple[str, ...] = ()  # columns whose long text wraps instead of widening the table
    notes: tuple[str, ...] = ()  # sentences shown above the caption, to be read (the card's rank conflicts)


@dataclass
class Card:
    """One gallery card's record and its pictures (paths inside report/, None if missing)."""
    rec: pd.Series
    photo: Path | None
    picture: Path | None


@dataclass
class Page:
    info: RunInfo
    df: pd.DataFrame
    views: list[str]
    card_table: TableSection | None
    tables: list[TableSection]
    figures: list[Figure]
    grids: list[Grid]
    cards: list[Card]
    run_files: dict[str, Path] = field(default_factory=dict)
    grid_note: str = ""  # why the grids show the photos they show


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _href(path: Path, base: Path) -> str:
    return quote(path.relative_to(base).as_posix())


def _view_class(view: str, views: list[str]) -> str:
    return f" v-{view}" if len(views) > 1 else ""


def _table_html(section: TableSection, base: Path, views: list[str]) -> str:
    t = section.table
    numeric = [pd.api.types.is_numeric_dtype(t[c]) for c in t.columns]
    td_class = ["num" if n else "wrap" if c in section.wrap else "" for c, n in zip(t.columns, numeric)]
    head = "".join(f'<th class="{"num" if n else ""}">{_header_cell(str(c), section.headers)}</th>'
                   for c, n in zip(t.columns, numeric))
    method_col = next((c for c in ("Method", "Method A") if c in t.columns), None)
    names = t[method_col].tolist() if method_col else [None] * len(t)
    # Splits (first column CNN/Size/Category) name their group once, on its first row.
    grouped = t.columns[0] not in ("Method", "Method A")
    rows, previous, previous_base = [], None, False
    # The words of every baseline: a row whose method (or method A) is one is a baseline row.
    baseline_labels = {method_label(m) for m in described().baselines}
    for name, row in zip(names, format_cells(t, section.digits)):
        first = grouped and row[0] != previous
        is_base = name in baseline_labels
        classes = ["first" if first else "", "baseline" if is_base else "",
                   "group-start" if is_base and not previous_base and not first else ""]
        cells = ["" if grouped and i == 0 and not first else v for i, v in enumerate(row)]
        previous, previous_base = row[0], is_base
        rows.append(f'<tr class="{" ".join(c for c in classes if c)}">'
                    + "".join(f'<td class="{k}">{_e(v)}</td>' for v, k in zip(cells, td_class))
                    + "</tr>")
    links = " · ".join(f'<a href="{_href(p, base)}">{kind.upper()}</a>' for kind, p in section.files.items())
    box = f"scroll {section.css}".strip()
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in section.notes)
    table = (f'<div class="{box}"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
             f'{notes}<p class="caption">{_e(section.caption)} <span class="links">{links}</span></p>')
    view = _view_class(section.view, views)
    if section.folded:
        return f'<details class="table{view}"><summary>{_e(section.title)}</summary>{table}</details>'
    return f'<section class="table{view}"><h3>{_e(section.title)}</h3>{table}</section>'


def _header_cell(column: str, short: dict[str, str]) -> str:
    if column not in short:
        return _e(column)
    return f'<abbr title="{_e(column)}">{_e(short[column])}</abbr>'


def _figure_html(fig: Figure, base: Path, views: list[str]) -> str:
    links = " · ".join(f'<a href="{_href(p, base)}">{p.suffix[1:].upper()}</a>' for p in fig.files)
    src = _href(fig.file("png"), base)
    return (f'<figure class="plot{" wide" if fig.wide else ""}{_view_class(fig.view, views)}"><a href="{src}"><img src="{src}" '
            f'alt="{_e(fig.title)}"></a><figcaption>{_e(fig.caption)} <span class="links">{links}</span>'
            "</figcaption></figure>")


def _grid_html(grid: Grid, base: Path) -> str:
    title = f"Image {grid.image_id} — {grid.category} — {size_label(grid.size)}"
    return (f'<figure class="grid"><a href="{_href(grid.path, base)}"><img loading="lazy" '
            f'src="{_href(grid.path, base)}" alt="{_e(title)}"></a><figcaption>{_e(title)}</figcaption></figure>')


def _num(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v


def _attr(value: float) -> str:
    return repr(value) if math.isfinite(value) else ""


def _card_html(card: Card, base: Path, order: int) -> str:
    rec = card.rec
    method = rec["method"]
    p, lift, chance = _num(rec["P"]), _num(rec.get("lift")), _num(rec.get("chance"))
    rank, prob = _num(rec.get("target_rank")), _num(rec.get("target_prob"))
    label = method_label(method)
    pics = []
    for path, what in ((card.photo, "photo with the mask outline"), (card.picture, f"{label} map")):
        if path is None:
            pics.append(f'<div class="missing">no {"photo" if "photo" in what else "picture"}</div>')
        else:
            src = _href(path, base)
            pics.append(f'<a href="{src}"><img loading="lazy" src="{src}" alt="{_e(what)} of image {_e(rec["id"])}">'
                        "</a>")
    baseline = is_baseline(method)
    who = "model-free" if baseline else f"{_e(cnn_label(rec['CNN']))}"
    lines = [
        f'<div class="pval">P = {f"{p:.3f}" if math.isfinite(p) else "NaN"}'
        f'<span class="sub"> · lift {f"{lift:.2f}×" if math.isfinite(lift) else "–"}'
        f' · chance {f"{chance:.2f}" if math.isfinite(chance) else "–"}</span></div>',
        f'<div class="meta"><b>{_e(label)}</b> · {who} · {_e(size_label(rec["size"]))}</div>',
        f'<div class="meta">image {_e(rec["id"])} · {_e(rec["class"])}</div>',
    ]
    target = rec.get("target_name", "")
    if not baseline and (target or math.isfinite(rank)):
        bits = [f"target: {_e(target)}" if target else "target"]
        if math.isfinite(rank):
            bits.append(f"rank {int(rank)}")
        if math.isfinite(prob):
            bits.append(f"prob. {prob:.2f}")
        lines.append(f'<div class="meta">{" · ".join(bits)}</div>')
    if rec["note"]:
        lines.append(f'<div class="note">{_e(rec["note"])}</div>')
    attrs = {"p": _attr(p), "lift": _attr(lift), "chance": _attr(chance), "rank": _attr(rank),
             "method": method, "cnn": rec["CNN"], "size": rec["size"], "class": rec["class"], "n": order}
    data = " ".join(f'data-{k}="{_e(v)}"' for k, v in attrs.items())
    return (f'<figure class="card{" baseline" if baseline else ""}" {data} '
            f'style="border-top-color:{method_color(method)}"><div class="pics">{"".join(pics)}</div>'
            f'<figcaption>{"".join(lines)}</figcaption></figure>')


def _select(name: str, label: str, values: list[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{_e(v)}">{_e(text)}</option>' for v, text in values)
    return f'<label>{_e(label)} <select data-filter="{name}"><option value="">all</option>{options}</select></label>'


def _header(page: Page, base: Path) -> str:
    info = page.info
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in info.facts)
    files = [f'<a href="{_href(p, base)}">{_e(name)}</a>' for name, p in page.run_files.items()]
    missing = [n for n in RUN_FILES if n not in page.run_files]
    files_html = " · ".join(files) + (f' <span class="caption">(not in the run folder: {_e(", ".join(missing))})</span>'
                                      if missing else "")
    notes = "".join(f'<p class="warn">{_e(n)}</p>' for n in info.notes)
    config = (f"<details><summary>Config as written</summary><pre>{_e(info.config_text)}</pre></details>"
              if info.config_text else "")
    stops = ", ".join(heat_stops())
    switch = ""
    if len(page.views) > 1:
        labels = "".join(f'<label for="view-{v}">{_e(VIEWS[v])}</label>' for v in page.views)
        switch = (f'<p class="switch">Tables and figures for: {labels}<span class="caption"> — "target in top '
                  f'{TOP_K}": only records whose explained class the model ranks among its {TOP_K} best '
                  "(baselines on the same photos).</span></p>")
    status = "".join(f'<p class="warn status">{_e(s)}</p>' for s in info.status)
    return f"""<header>
<h1>Which saliency method points at the object? <span class="run">{_e(info.name)}</span></h1>{status}
<p class="lead"><b>P</b> (energy concentration, the measure of {_e(THESIS)}) is the share of a saliency map's
energy — its squared values — that lies inside the object's dilated mask: <span class="formula">
P = E / E<sub>celk</sub> = &Sigma; (I&middot;M)&sup2; / &Sigma; I&sup2;</span>, where I is the map, M the dilated mask
(1 inside, 0 outside), E the energy inside the mask and E<sub>celk</sub> the map's total energy (<i>celk</i>:
Czech <i>celková</i>, "total", as the thesis writes it). A map that ignores the photo scores the mask's area
share (the <i>chance</i> level); <i>lift</i> = P / chance.</p>
<dl class="facts">{facts}</dl>{notes}
<p class="files">Files: {files_html}</p>{config}
<p class="caption">How the maps are pictured: <b>grey</b> maps show the channel-summed magnitude |map|, clipped at
its 99.5th percentile (white = most salient) <span class="bar grey"></span>; <b>heat</b> maps blend the jet
colour map half-and-half over the photo <span class="bar heat" style="background:linear-gradient(to right,
{stops})"></span> (blue = 0, red = the map's maximum). The yellow line is the dilated mask.</p>
{switch}
</header>"""


def write_index(report_dir: Path, page: Page) -> Path:
    views = page.views
    ids = {v: i for i, v in enumerate(order_ids(page.df["id"]))}
    cards = [_card_html(c, report_dir, ids[c.rec["id"]]) for c in page.cards]
    missing = sum(c.picture is None for c in page.cards)
    if missing:
        log.warning("%d gallery picture(s) are missing in the run folder; shown as 'no picture'", missing)
    df = page.df
    methods = order_methods(set(df["method"]))
    filters = "".join([
        _select("method", "Method", [(m, method_label(m)) for m in methods]),
        _select("cnn", "CNN", [(c, cnn_label(c)) for c in sorted(set(df["CNN"]))]),
        _select("size", "Size", [(s, size_label(s)) for s in order_sizes(set(df["size"]))]),
        _select("class", "Category", [(c, c) for c in sorted(set(df["class"]))]),
        f'<label>Target <select data-filter="rank"><option value="">any rank</option>'
        f'<option value="top">in top {TOP_K}</option></select></label>',
    ])
    legend = "".join(f'<span class="swatch{" hatched" if is_baseline(m) else ""}" '
                     f'style="background-color:{method_color(m)}"></span>{_e(method_label(m))} ' for m in methods)
    radios = "".join(f'<input type="radio" name="view" id="view-{v}" class="view-radio"{" checked" if i == 0 else ""}>'
                     for i, v in enumerate(views)) if len(views) > 1 else ""
    card_section = ""
    if page.card_table is not None:
        card_section = _table_html(page.card_table, report_dir, views)
    sort_options = "".join(f'<option value="{k}">{_e(t)}</option>' for k, t in (
        ("p-desc", "P, highest first"), ("p-asc", "P, lowest first"), ("lift-desc", "lift, highest first"),
        ("lift-asc", "lift, lowest first"), ("chance-asc", "chance, smallest object first"),
        ("chance-desc", "chance, largest object first"), ("id", "image id")))
    page_html = PAGE.format(
        title=_title(page.info),
        css=CSS + _view_css(views),
        js=JS,
        radios=radios,
        header=_header(page, report_dir),
        card=card_section,
        legend=legend,
        tables="".join(_table_html(t, report_dir, views) for t in page.tables),
        figures="".join(_figure_html(f, report_dir, views) for f in page.figures),
        grids="".join(_grid_html(g, report_dir) for g in page.grids) or "<p>No grids.</p>",
        grid_note=_e(f"{GRID_NOTE} {page.grid_note}".strip()),
        gallery_note=_e(GALLERY_NOTE.format(n=len(cards), page=PAGE_SIZE)),
        filters=filters,
        sort_options=sort_options,
        n_cards=len(cards),
        cards="".join(cards),
        pager=PAGER.format(pages=max(1, -(-len(cards) // PAGE_SIZE))),
    )
    path = report_dir / "index.html"
    path.write_text(page_html, encoding="utf-8")
    return path


def _title(info: RunInfo) -> str:
    """The tab says it too: "(unfinished)", "(still running)", "(every unit failed)"."""
    state = f" ({info.status[0].split(':')[0].lower()})" if info.status else ""
    return _e(f"xcnn report — {info.name}{state}")


def write_failed_index(report_dir: Path, info: RunInfo, failed: Counter[str], run_files: dict[str, Path]) -> Path:
    """The page of a run whose every unit failed: its header and the failures by reason
    (`run_files` holds failures.jsonl, copied into report/)."""
    page = Page(info=info, df=pd.DataFrame(), views=[], card_table=None, tables=[], figures=[], grids=[], cards=[],
                run_files=run_files)
    shown = 50  # distinct reasons listed; failures.jsonl has them all
    rows = "".join(f"<tr><td class=\"num\">{n}</td><td class=\"wrap\">{_e(reason)}</td></tr>"
                   for reason, n in failed.most_common(shown))
    more = f"<p class=\"caption\">And {len(failed) - shown} other reasons.</p>" if len(failed) > shown else ""
    link = _href(run_files[FAILURES_FILE], report_dir)
    body = (f'<h2 id="failures">Failed units</h2><p>Each failed unit (CNN, size, photo, category) is listed with '
            f'its reason in <a href="{link}">{FAILURES_FILE}</a>. Fix what the reasons name, then run the same '
            "'xcnn run' command again: it retries failed units.</p>"
            f'<div class="scroll"><table><thead><tr><th class="num">Units</th><th>Reason</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>{more}")
    text = FAILED_PAGE.format(title=_title(info), css=CSS, header=_header(page, report_dir), body=body)
    path = report_dir / "index.html"
    path.write_text(text, encoding="utf-8")
    return path


def _view_css(views: list[str]) -> str:
    """The view switch is two radio buttons and CSS alone: it works with scripts turned off."""
    if len(views) < 2:
        return ""
    rules = []
    for v in views:
        others = ",".join(f"#view-{v}:checked~main .v-{o}" for o in views if o != v)
        rules.append(f"{others}{{display:none}}#view-{v}:checked~main label[for=view-{v}]"
                     "{background:#1a1a1a;color:#fff}")
    return "".join(rules)
