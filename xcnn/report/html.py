"""index.html: one self-contained page (inline CSS/JS, pictures by relative path) with tables,
figures, grids and a sortable, filterable gallery of every map."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from xcnn.report.figures import Figure, method_color
from xcnn.report.grids import Grid
from xcnn.report.tables import cnn_label, format_cells, method_label, order_methods, order_sizes, size_label

log = logging.getLogger(__name__)


@dataclass
class TableSection:
    title: str
    caption: str
    table: pd.DataFrame  # already in words (table_for_display / paired_for_display)
    files: dict[str, Path]
    folded: bool = False  # shown inside a closed <details>


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _href(path: Path, base: Path) -> str:
    return quote(path.relative_to(base).as_posix())


def _run_href(rel: str) -> str:
    """A record's picture path (relative to RUN_DIR) as seen from RUN_DIR/report/."""
    return "../" + quote(rel.replace("\\", "/"))


def _table_html(section: TableSection, base: Path) -> str:
    t = section.table
    numeric = [pd.api.types.is_numeric_dtype(t[c]) for c in t.columns]
    head = "".join(f'<th class="{"num" if n else ""}">{_e(c)}</th>' for c, n in zip(t.columns, numeric))
    # Splits (first column CNN/Size/Category) name their group once, on its first row.
    grouped = t.columns[0] not in ("Method", "Method A")
    rows, previous = [], None
    for row in format_cells(t):
        first = grouped and row[0] != previous
        cells = ["" if grouped and i == 0 and not first else v for i, v in enumerate(row)]
        previous = row[0]
        rows.append(f'<tr class="{"first" if first else ""}">'
                    + "".join(f'<td class="{"num" if n else ""}">{_e(v)}</td>' for v, n in zip(cells, numeric))
                    + "</tr>")
    links = " · ".join(f'<a href="{_href(p, base)}">{kind.upper()}</a>' for kind, p in section.files.items())
    table = (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
             f'<p class="caption">{_e(section.caption)} <span class="links">{links}</span></p>')
    if section.folded:
        return f'<details class="table"><summary>{_e(section.title)}</summary>{table}</details>'
    return f'<section class="table"><h3>{_e(section.title)}</h3>{table}</section>'


def _figure_html(fig: Figure, base: Path) -> str:
    links = " · ".join(f'<a href="{_href(p, base)}">{p.suffix[1:].upper()}</a>' for p in fig.files)
    wide = " wide" if fig.name == "mean_p_by_category" else ""  # many clusters: give it the full width
    return (f'<figure class="plot{wide}"><img src="{_href(fig.file("png"), base)}" alt="{_e(fig.title)}">'
            f"<figcaption>{_e(fig.caption)} <span class=\"links\">{links}</span></figcaption></figure>")


def _grid_html(grid: Grid, base: Path) -> str:
    title = f"Image {grid.image_id} — {grid.category} — {size_label(grid.size)}"
    return (f'<figure class="grid"><a href="{_href(grid.path, base)}"><img src="{_href(grid.path, base)}" '
            f'alt="{_e(title)}"></a><figcaption>{_e(title)}</figcaption></figure>')


def _card(rec: pd.Series, run_dir: Path) -> tuple[str, bool]:
    """One gallery card; False when its picture is missing (shown as text, never as a broken image)."""
    p = float(rec["P"])
    p_text = f"{p:.3f}" if math.isfinite(p) else "NaN"
    lift = rec.get("lift", math.nan)
    lift_text = f" · lift {lift:.2f}×" if isinstance(lift, float) and math.isfinite(lift) else ""
    rel = rec["map_png"]
    ok = bool(rel) and (run_dir / rel).is_file()
    if ok:
        picture = (f'<a href="{_run_href(rel)}" target="_blank"><img loading="lazy" src="{_run_href(rel)}" '
                   f'alt="{_e(method_label(rec["method"]))} map of image {_e(rec["id"])}"></a>')
    else:
        picture = '<div class="missing">no picture</div>'
    target = rec.get("target_name", "")
    target_line = f'<div class="meta">target: {_e(target)}</div>' if isinstance(target, str) and target else ""
    note = f'<div class="note">{_e(rec["note"])}</div>' if rec["note"] else ""
    attrs = {
        "p": repr(p) if math.isfinite(p) else "",
        "method": rec["method"], "cnn": rec["CNN"], "size": rec["size"], "class": rec["class"],
        "id": int(rec["id"]),
    }
    data = " ".join(f'data-{k}="{_e(v)}"' for k, v in attrs.items())
    return (
        f'<figure class="card" {data} style="border-top-color:{method_color(rec["method"])}">{picture}'
        f'<figcaption><div class="pval">P = {p_text}<span class="lift">{_e(lift_text)}</span></div>'
        f'<div class="meta"><b>{_e(method_label(rec["method"]))}</b> · {_e(cnn_label(rec["CNN"]))} · '
        f'{_e(size_label(rec["size"]))}</div>'
        f'<div class="meta">image {_e(rec["id"])} · {_e(rec["class"])}</div>{target_line}{note}</figcaption></figure>',
        ok,
    )


def _select(name: str, label: str, values: list[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{_e(v)}">{_e(text)}</option>' for v, text in values)
    return f'<label>{_e(label)} <select data-filter="{name}"><option value="">all</option>{options}</select></label>'


def write_index(
    run_dir: Path, report_dir: Path, df: pd.DataFrame, tables: list[TableSection],
    figures: list[Figure], grids: list[Grid],
) -> Path:
    cards, missing = [], 0
    ordered = df.assign(_p=df["P"].fillna(-1)).sort_values(["_p", "id"], ascending=[False, True])
    for _, rec in ordered.iterrows():
        html, ok = _card(rec, run_dir)
        cards.append(html)
        missing += not ok
    if missing:
        log.warning("%d gallery picture(s) are missing under %s; shown as 'no picture'", missing, run_dir)
    methods = order_methods(set(df["method"]))
    filters = "".join([
        _select("method", "Method", [(m, method_label(m)) for m in methods]),
        _select("cnn", "CNN", [(c, cnn_label(c)) for c in sorted(set(df["CNN"]))]),
        _select("size", "Size", [(s, size_label(s)) for s in order_sizes(set(df["size"]))]),
        _select("class", "Category", [(c, c) for c in sorted(set(df["class"]))]),
    ])
    n_nan = int((~df["P"].apply(math.isfinite)).sum())
    summary = (f"{len(df)} records · {df['id'].nunique()} images · {df['class'].nunique()} categories · "
               f"{df['CNN'].nunique()} CNNs · {df['size'].nunique()} sizes · "
               f"{len(methods)} methods · {n_nan} with P = NaN")
    legend = "".join(f'<span class="swatch" style="background:{method_color(m)}"></span>{_e(method_label(m))} '
                     for m in methods)
    page = _PAGE.format(
        title=_e(f"xcnn report — {run_dir.resolve().name}"),
        css=_CSS,
        js=_JS,
        run=_e(run_dir.resolve().name),
        summary=_e(summary),
        legend=legend,
        tables="".join(_table_html(t, report_dir) for t in tables),
        figures="".join(_figure_html(f, report_dir) for f in figures),
        grids="".join(_grid_html(g, report_dir) for g in grids) or "<p>No grids.</p>",
        filters=filters,
        n_cards=len(cards),
        cards="".join(cards),
    )
    path = report_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


_CSS = """
:root{--fg:#1a1a1a;--muted:#555;--line:#ddd;--bg:#fafafa}
*{box-sizing:border-box}
body{font:17px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
 background:#fff;margin:0 auto;max-width:1500px;padding:0 24px 60px}
h1{font-size:30px;margin:24px 0 4px}h2{font-size:25px;margin:36px 0 10px;border-bottom:2px solid var(--line)}
h3{font-size:19px;margin:22px 0 6px}
nav a{margin-right:16px}.summary{color:var(--muted);margin:2px 0 8px}
.swatch{display:inline-block;width:14px;height:14px;border-radius:3px;margin:0 5px 0 12px;vertical-align:-2px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:15px}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{background:var(--bg);position:sticky;top:0}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f3f6fb}tr.first td{border-top:2px solid #bbb}
details.table{margin:10px 0}details.table summary{font-size:19px;font-weight:600;cursor:pointer;padding:4px 0}.caption{color:var(--muted);font-size:14px;margin:6px 0}
.links a{margin:0 2px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure{margin:0}figure.wide{grid-column:1/-1}figure.plot img,figure.grid img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:14px;color:var(--muted)}
.grids{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:18px}
.controls{position:sticky;top:0;background:#fff;padding:8px 0;z-index:2;border-bottom:1px solid var(--line)}
.controls label{margin-right:14px}select{font-size:15px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px;margin-top:12px}
.card{border:1px solid var(--line);border-top:5px solid;border-radius:4px;padding:6px;background:#fff}
.card img{width:100%;height:auto;aspect-ratio:auto;display:block;background:var(--bg)}
.card .pval{font-weight:600;font-size:16px;color:var(--fg)}.card .lift{font-weight:400;font-size:13px;color:var(--muted)}.card .meta{font-size:13px}
.card .note{font-size:12px;color:#a33}.missing{padding:40px 0;text-align:center;color:#999;background:var(--bg)}
"""

# Sort/filter for the gallery, plus a self-check (hash #selfcheck) that loads every picture and writes
# what it found into <body data-…> so a headless browser test can read it from the DOM.
_JS = """
(function(){
  var errors=[];
  function note(msg){errors.push(String(msg));document.body&&(document.body.dataset.jsErrors=errors.join(' | '));}
  window.addEventListener('error',function(e){if(e instanceof ErrorEvent){note(e.message);}},true);
  window.addEventListener('unhandledrejection',function(e){note(e.reason);});
  var origError=console.error;console.error=function(){note(Array.prototype.join.call(arguments,' '));
    return origError.apply(console,arguments);};
  function cards(){return Array.prototype.slice.call(document.querySelectorAll('#gallery .card'));}
  function apply(){
    var f={};document.querySelectorAll('select[data-filter]').forEach(function(s){f[s.dataset.filter]=s.value;});
    var key=document.getElementById('sort').value, list=cards(), shown=0;
    // NaN P (data-p="") always goes last.
    function pv(c,sign){return c.dataset.p===''?Infinity:sign*(+c.dataset.p);}
    list.sort(function(a,b){
      if(key==='p-desc')return pv(a,-1)-pv(b,-1)||(+a.dataset.id)-(+b.dataset.id);
      if(key==='p-asc')return pv(a,1)-pv(b,1)||(+a.dataset.id)-(+b.dataset.id);
      return (+a.dataset.id)-(+b.dataset.id)||pv(a,-1)-pv(b,-1);});
    var box=document.getElementById('gallery');
    list.forEach(function(c){var ok=Object.keys(f).every(function(k){return !f[k]||c.dataset[k]===f[k];});
      c.style.display=ok?'':'none';shown+=ok;box.appendChild(c);});
    document.getElementById('shown').textContent=shown;
  }
  function selfCheck(){
    var imgs=Array.prototype.slice.call(document.images);
    imgs.forEach(function(i){i.loading='eager';});
    Promise.all(imgs.map(function(i){return i.complete&&i.naturalWidth>0?null:new Promise(function(r){
      i.addEventListener('load',r);i.addEventListener('error',r);if(i.complete)r();});})).then(function(){
      var broken=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
      var d=document.body.dataset;
      d.imagesTotal=imgs.length;d.brokenImages=broken.length;
      d.brokenList=broken.slice(0,20).map(function(i){return i.getAttribute('src');}).join(' ');
      d.tables=document.querySelectorAll('table').length;
      // Exercise sort and filter once so a test can compare them with the records.
      var sort=document.getElementById('sort'),method=document.querySelector('select[data-filter=method]');
      sort.value='p-asc';apply();d.firstP=cards()[0].dataset.p;
      method.value='gradcam';apply();d.shownGradcam=document.getElementById('shown').textContent;
      method.value='';sort.value='p-desc';apply();
      d.jsErrors=errors.join(' | ');d.checkDone='1';});
  }
  document.addEventListener('DOMContentLoaded',function(){
    document.querySelectorAll('.controls select').forEach(function(s){s.addEventListener('change',apply);});
    if(location.hash==='#selfcheck'){selfCheck();}
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style><script>{js}</script></head>
<body>
<h1>Saliency maps scored by energy concentration</h1>
<p class="summary">Run <b>{run}</b> · {summary}</p>
<p class="summary">Methods: {legend}</p>
<nav><a href="#tables">Tables</a><a href="#figures">Figures</a><a href="#grids">Image grids</a>
<a href="#gallery-section">Gallery</a></nav>
<h2 id="tables">Tables</h2>{tables}
<h2 id="figures">Figures</h2><div class="plots">{figures}</div>
<h2 id="grids">Image grids</h2>
<p class="caption">Rows: methods. Columns: CNNs. The yellow line is the dilated object mask; P under each map.</p>
<div class="grids">{grids}</div>
<h2 id="gallery-section">Gallery</h2>
<div class="controls"><label>Sort <select id="sort"><option value="p-desc">P, highest first</option>
<option value="p-asc">P, lowest first</option><option value="id">image id</option></select></label>{filters}
<span class="caption"><span id="shown">{n_cards}</span> of {n_cards} maps</span></div>
<div class="gallery" id="gallery">{cards}</div>
</body></html>
"""
