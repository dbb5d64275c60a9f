"""The fixed text of index.html: its style sheet, the gallery's script, the page templates and
the notes under the grids and the gallery (``html`` fills them in)."""
from __future__ import annotations

from xcnn.report.labels import TOP_K

PAGE_SIZE = 60  # gallery cards on screen at once: the demo's 750 made a page 88,000 px tall

CSS = """
:root{--fg:#1a1a1a;--muted:#555;--line:#ddd;--bg:#fafafa}
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
 background:#fff;margin:0 auto;max-width:1500px;padding:0 24px 60px}
h1{font-size:27px;margin:20px 0 6px}h1 .run{font-weight:400;color:var(--muted);font-size:20px;margin-left:8px}
h2{font-size:23px;margin:32px 0 10px;border-bottom:2px solid var(--line)}h3{font-size:18px;margin:20px 0 6px}
.lead{max-width:1000px;margin:4px 0 8px}.formula{font-family:"DejaVu Serif",Georgia,serif;white-space:nowrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:6px 0;font-size:14px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:4px 10px;font-size:14px}
.warn.status{font-size:16px;font-weight:600;border-left-color:#c0392b;background:#fde8e4}
.files{font-size:14px;margin:4px 0}pre{font-size:12px;background:var(--bg);padding:8px;overflow-x:auto}
.bar{display:inline-block;width:120px;height:12px;vertical-align:-1px;border:1px solid #999;margin:0 3px}
.bar.grey{background:linear-gradient(to right,#000,#fff)}
.view-radio{position:absolute;opacity:0;pointer-events:none}
.switch label{display:inline-block;border:1px solid #1a1a1a;padding:2px 10px;margin-left:6px;cursor:pointer;
 border-radius:3px}
nav a{margin-right:16px}
.swatch{display:inline-block;width:13px;height:13px;border-radius:3px;margin:0 4px 0 10px;vertical-align:-2px}
.hatched{background-image:repeating-linear-gradient(45deg,transparent 0 2px,#555 2px 3px)}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:14px}
th,td{padding:3px 9px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
td.wrap{white-space:normal;min-width:8em}abbr[title]{text-decoration:underline dotted;cursor:help}
.compact table{font-size:12.5px}.compact th,.compact td{padding:3px 6px}
.compact th{white-space:normal;vertical-align:bottom;min-width:3.5em}
th{background:var(--bg);position:sticky;top:0}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f3f6fb}tr.first td{border-top:2px solid #bbb}
tr.baseline td{color:#555;font-style:italic;background:#f4f4f4}tr.group-start td{border-top:2px dashed #aaa}
details.table{margin:8px 0}details.table summary{font-size:18px;font-weight:600;cursor:pointer;padding:4px 0}
.caption{color:var(--muted);font-size:13px;margin:6px 0}p.note{font-size:14px;margin:6px 0;padding:3px 10px;
 border-left:4px solid #5b7fa6;background:#eef3f8}.links a{margin:0 2px}
section.card-box{border:2px solid #8aa;border-radius:6px;padding:4px 14px 8px;margin:14px 0;background:#fbfdfd}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:18px}
figure{margin:0}figure.wide{grid-column:1/-1}
figure.plot img,figure.grid img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:13px;color:var(--muted)}
.grids{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:18px}
.controls{position:sticky;top:0;background:#fff;padding:8px 0;z-index:2;border-bottom:1px solid var(--line)}
.controls label{margin-right:12px}select{font-size:14px}
.paging{margin-top:4px}.pager{white-space:nowrap;margin-left:8px}.pager button{font-size:14px}
.pager-bottom{margin:14px 0;text-align:center}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;margin-top:12px}
.card{border:1px solid var(--line);border-top:5px solid;border-radius:4px;padding:6px;background:#fff}
.card.baseline{background:#f4f4f4}
.card .pics{display:grid;grid-template-columns:1fr 1fr;gap:4px}
.card img{width:100%;height:auto;display:block;background:var(--bg)}
.card .pval{font-weight:600;font-size:15px}.card .sub{font-weight:400;font-size:12px;color:var(--muted)}
.card .meta{font-size:12px}.card .note{font-size:12px;color:#a33}
.missing{padding:30px 0;text-align:center;color:#999;background:var(--bg);font-size:12px}
"""

GRID_NOTE = ("Rows: methods; columns: CNNs; first column: the photo, its dilated mask and the model-free "
             "baselines. The yellow line is the dilated object mask; P under each map. Above each CNN's column: the "
             "class its maps explain (the target) and the model's rank of it among all its classes by score "
             "(rank 1: the model's top prediction).")
GALLERY_NOTE = ("Every map of the run, one card each: the photo with the dilated mask's outline, and the map (a "
                "preview; the full-size pictures are in the run folder's pictures/). Target: the class explained; "
                "rank: the model's rank of it among its classes (1 = its top prediction); prob.: the model's "
                "probability of it. The sort and the filters act on all {n} maps; {page} are shown per page.")
PAGER = ('<span class="pager" hidden><button type="button" data-page="prev">&larr; previous</button> '
          '<span class="page-of">page 1 of {pages}</span> '
          '<button type="button" data-page="next">next &rarr;</button></span>')

# Sort, filter and pages for the gallery only. Without scripts every card shows, in P order.
JS = """
document.addEventListener('DOMContentLoaded',function(){
  var box=document.getElementById('gallery');if(!box)return;
  var cards=Array.prototype.slice.call(box.children),matching=cards,page=0,per=""" + str(PAGE_SIZE) + """;
  function num(c,k){var v=c.dataset[k];return v===''?NaN:+v;}
  function each(sel,f){Array.prototype.forEach.call(document.querySelectorAll(sel),f);}
  function show(){
    var pages=Math.max(1,Math.ceil(matching.length/per));page=Math.min(Math.max(page,0),pages-1);
    var on=matching.slice(page*per,(page+1)*per);
    cards.forEach(function(c){c.style.display='none';});
    on.forEach(function(c){c.style.display='';});
    each('.page-of',function(e){e.textContent='page '+(page+1)+' of '+pages;});
    each('[data-page=prev]',function(b){b.disabled=page===0;});
    each('[data-page=next]',function(b){b.disabled=page>=pages-1;});
  }
  function apply(){
    var f={};each('select[data-filter]',function(s){f[s.dataset.filter]=s.value;});
    var parts=document.getElementById('sort').value.split('-'),key=parts[0],sign=parts[1]==='asc'?1:-1;
    cards.sort(function(a,b){
      if(key==='id')return num(a,'n')-num(b,'n')||num(b,'p')-num(a,'p');
      var x=num(a,key),y=num(b,key);  // a missing value goes last either way
      if(isNaN(x)||isNaN(y))return isNaN(x)-isNaN(y);
      return sign*(x-y)||num(a,'n')-num(b,'n');});
    matching=cards.filter(function(c){
      box.appendChild(c);
      return Object.keys(f).every(function(k){
        if(!f[k])return true;
        if(k==='rank')return num(c,'rank')<=""" + str(TOP_K) + """||c.classList.contains('baseline');
        return c.dataset[k]===f[k];});});
    document.getElementById('shown').textContent=matching.length;
    page=0;show();
  }
  each('.controls select',function(s){s.addEventListener('change',apply);});
  each('.pager',function(p){p.hidden=false;});
  each('[data-page]',function(b){b.addEventListener('click',function(){
    page+=b.dataset.page==='next'?1:-1;show();
    if(b.closest('.pager-bottom'))document.getElementById('gallery-section').scrollIntoView();});});
  apply();
});
"""

FAILED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><main>
{header}
{body}
</main></body></html>
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style><script>{js}</script></head>
<body>{radios}
<main>
{header}
<!-- METHOD CARD: one row per method and baseline. Validity checks (model randomisation, input and
class dependence, faithfulness) add their columns here; see tables.method_card. -->
<section class="card-box" id="method-card"><h2>Method card</h2>{card}</section>
<p class="caption">Colours: {legend}</p>
<nav><a href="#tables">Tables</a><a href="#figures">Figures</a><a href="#grids">Image grids</a>
<a href="#gallery-section">Gallery</a></nav>
<h2 id="tables">Tables</h2>{tables}
<h2 id="figures">Figures</h2><div class="plots">{figures}</div>
<h2 id="grids">Image grids</h2>
<p class="caption">{grid_note}</p>
<div class="grids">{grids}</div>
<h2 id="gallery-section">Gallery</h2>
<p class="caption">{gallery_note}</p>
<div class="controls"><label>Sort <select id="sort">{sort_options}</select></label>{filters}
<div class="paging"><span class="caption"><span id="shown">{n_cards}</span> of {n_cards} maps match</span>
{pager}</div></div>
<div class="gallery" id="gallery">{cards}</div>
<div class="pager-bottom">{pager}</div>
</main>
</body></html>
"""
