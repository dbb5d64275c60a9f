// xcnn app: one hand-written page; every request goes to the server that served it.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { photo: null, weights: null, job: null, target: null, run: 0, runs: [], labels: {} };

function showError(text) { $("error").textContent = text ? String(text).split("\n")[0] : ""; }

async function api(path, options) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

async function upload(path, file) {
  return api(path, { method: "POST", body: file, headers: { "X-Filename": encodeURIComponent(file.name) } });
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "boolean") return v ? "hit" : "miss";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}

// --- tabs ---------------------------------------------------------------------------------
for (const t of document.querySelectorAll(".tab")) {
  t.onclick = () => {
    for (const o of document.querySelectorAll(".tab")) o.classList.toggle("active", o === t);
    for (const v of document.querySelectorAll(".view")) v.classList.toggle("hidden", v.id !== "view-" + t.dataset.view);
  };
}

// --- explain ------------------------------------------------------------------------------
async function loadInfo() {
  const info = await api("/api/info");
  for (const m of info.models) $("model").append(el("option", { value: m }, m));
  for (const m of info.methods) {
    const box = el("input", { type: "checkbox", id: "method-" + m.name, value: m.name });
    box.checked = info.default_methods.includes(m.name);
    $("methods").append(el("label", { title: m.label + (m.slow ? " (multi-pass: its progress shows beside Explain)" : "") },
      box, " " + m.name + (m.slow ? " (multi-pass)" : "")));
  }
  for (const d of info.demo) $("demo-photo").append(el("option", { value: d.key }, `${d.file} (${d.category})`));
  if (info.runs === 0) $("tab-browse").disabled = true;
}

$("photo-file").onchange = async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  showError("");
  $("demo-photo").value = "";
  state.photo = null;
  $("photo-name").textContent = "uploading…";
  try {
    const r = await upload("/api/photo", f);
    state.photo = r.token;
    $("photo-name").textContent = `${r.name}: ${r.width}×${r.height}`;
    $("mask-name").textContent = "";
  } catch (e) { $("photo-name").textContent = ""; showError(e.message); }
};

$("demo-photo").onchange = () => {
  showError("");
  state.photo = $("demo-photo").value || null;
  $("photo-file").value = "";
  $("photo-name").textContent = state.photo ? "demo photo; its mask comes from the dataset" : "";
  $("mask-name").textContent = state.photo ? "mask: from the dataset" : "";
};

$("mask-file").onchange = async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  showError("");
  if (!state.photo) { showError("choose a photo first, then its mask"); return; }
  try {
    const r = await api("/api/mask?photo=" + encodeURIComponent(state.photo),
      { method: "POST", body: f, headers: { "X-Filename": encodeURIComponent(f.name) } });
    state.photo = r.token;
    $("mask-name").textContent = `mask ${f.name}: ${(100 * r.area).toFixed(1)} % of the photo`;
  } catch (e) { showError(e.message); }
};

$("weights-file").onchange = async (ev) => {
  const f = ev.target.files[0];
  state.weights = null;
  if (!f) return;
  try { state.weights = (await upload("/api/weights", f)).token; } catch (e) { showError(e.message); }
};

function chosenMethods() {
  return [...document.querySelectorAll("#methods input:checked")].map((b) => b.value);
}

async function explain(target) {
  showError("");
  if (!state.photo) { showError("upload a photo or pick a demo photo first"); return; }
  const typed = $("target").value.trim();
  const body = {
    photo: state.photo, model: $("model-name").value.trim() || $("model").value, weights: state.weights,
    methods: chosenMethods(), size: $("size").value, growth: parseFloat($("growth").value),
    target: target !== undefined ? target : (typed === "" ? null : typed),
  };
  $("maps").replaceChildren(); $("scores").replaceChildren(); $("downloads").replaceChildren();
  $("explain-info").textContent = "";
  try {
    const job = await api("/api/explain", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    state.job = job.id;
    poll(job.id);
  } catch (e) { showError(e.message); }
}
$("explain").onclick = () => explain();

async function poll(id) {
  let job;
  try { job = await api("/api/jobs/" + id); } catch (e) { showError(e.message); return; }
  if (state.job !== id) return;
  renderJob(job);
  if (job.state === "queued" || job.state === "running") setTimeout(() => poll(id), 150);
}

function renderJob(job) {
  $("progress").textContent = job.state === "running" || job.state === "queued" ? (job.progress || job.state) : "";
  if (job.error) showError(job.error);
  if (job.top5.length && $("top5").dataset.job !== job.id) { renderTop5(job); $("top5").dataset.job = job.id; }
  const i = job.info;
  if (i.target !== undefined) {
    $("explain-info").textContent = `${i.model} · ${i.width}×${i.height} · target ${i.target} ${i.target_name} ` +
      `(p = ${fmt(i.target_prob)}, rank ${i.target_rank})` + (i.mask ? ` · mask: ${i.mask}, growth ${i.growth}` : "");
  }
  for (const m of job.maps) {
    let fig = document.querySelector(`#maps figure[data-method="${m.method}"]`);
    if (!fig) {
      fig = el("figure", { "data-method": m.method },
        el("img", { src: `/api/jobs/${job.id}/maps/${m.method}.png`, alt: m.method }), el("figcaption", {}));
      $("maps").append(fig);
    }
    fig.querySelector("figcaption").textContent =
      `${m.method} · ${fmt(m.ms, 0)} ms` + (m.P !== undefined ? ` · P ${fmt(m.P)}` : "");
  }
  if (job.maps.length && job.maps[0].P !== undefined) renderScores(job.maps);
  if (job.state === "done") renderDownloads(job);
}

function renderTop5(job) {
  $("top5").replaceChildren("Top 5: ");
  for (const t of job.top5) {
    const b = el("button", { type: "button", "data-index": t.index, title: "explain this class" },
      `${t.index} ${t.name} ${(100 * t.prob).toFixed(1)} %`);
    if (t.index === job.info.target) b.classList.add("chosen");
    b.onclick = () => { $("target").value = t.index; explain(t.index); };
    $("top5").append(b);
  }
}

function renderScores(maps) {
  const rows = [...maps].sort((a, b) => (b.P ?? -1) - (a.P ?? -1));
  const head = el("tr", {}, ...["method", "P", "chance", "lift", "pointing game", "ms"].map((h) => el("th", {}, h)));
  const body = rows.map((m) => el("tr", { "data-method": m.method }, el("td", {}, m.method),
    el("td", { class: "P", "data-value": m.P ?? "" }, fmt(m.P, 4)), el("td", {}, fmt(m.chance, 4)),
    el("td", {}, fmt(m.lift)), el("td", {}, fmt(m.pointing_hit)), el("td", {}, fmt(m.ms, 0))));
  $("scores").replaceChildren(head, ...body);
}

function renderDownloads(job) {
  const links = [el("a", { href: `/api/jobs/${job.id}/numbers.json`, download: "numbers.json" }, "numbers.json"), " · ",
    el("a", { href: `/api/jobs/${job.id}/maps.npz`, download: "maps.npz" }, "maps.npz")];
  for (const m of job.maps) links.push(" · ", el("a", { href: `/api/jobs/${job.id}/maps/${m.method}.png`,
    download: `${m.method}.png` }, `${m.method}.png`));
  $("downloads").replaceChildren("Download: ", ...links);
}

// --- browse -------------------------------------------------------------------------------
function runUrl(path) { return `/api/runs/${state.run}/${path}`; }
function fileUrl(rel) { return runUrl("file/" + rel.split("/").map(encodeURIComponent).join("/")); }
function filters() {
  const q = new URLSearchParams();
  for (const s of document.querySelectorAll(".filter")) if (s.value) q.set(s.dataset.key, s.value);
  return q;
}

function fill(select, values, labels, blank) {
  const old = select.value;
  select.replaceChildren(...(blank ? [el("option", { value: "" }, blank)] : []),
    ...values.map((v) => el("option", { value: v }, labels ? labels[v] || v : v)));
  if (values.map(String).includes(old)) select.value = old;
}

async function loadRuns() {
  state.runs = await api("/api/runs");
  fill($("run"), state.runs.map((_, i) => String(i)), Object.fromEntries(state.runs.map((r, i) => [i, r.path])));
  if (state.runs.length) await openRun(0);
}

async function openRun(index, summary) {
  state.run = index;
  const r = summary || state.runs[index];
  $("run-status").textContent = r.error ? r.error : (r.finished ? "" : (r.status || "unfinished"));
  if (r.error) return;
  state.labels = r.labels;
  fill($("f-method"), r.methods, null, "all methods");
  fill($("f-CNN"), r.cnns, null, "all CNNs");
  fill($("f-size"), r.sizes, null, "all sizes");
  fill($("f-class"), r.classes, null, "all categories");
  fill($("f-max_rank"), r.ranks.map(String), null, "any");
  fill($("scatter-a"), r.methods); fill($("scatter-b"), r.methods);
  if (r.methods.length > 1 && $("scatter-a").value === $("scatter-b").value) $("scatter-b").value = r.methods[1];
  $("unit").replaceChildren();
  await Promise.all([loadGallery(), loadScatter(), loadCard()]);
}

async function loadGallery() {
  try {
    const cards = await api(runUrl("gallery?" + filters()));
    $("gallery").replaceChildren(...cards.map((c) => el("figure", {
      class: "photo", "data-id": c.id, "data-class": c.class, onclick: () => openUnit(c.id, c.class, c.CNN, c.size),
    }, el("img", { src: fileUrl(c.picture), alt: String(c.id), loading: "lazy" }),
    el("figcaption", {}, `${c.id} ${c.class} · ${c.CNN} · ${c.size}` + (c.P !== null ? ` · P ${fmt(c.P)}` : "")))));
  } catch (e) { showError(e.message); }
}

async function openUnit(id, cls, cnn, size) {
  try {
    const q = new URLSearchParams({ id, cls, cnn, size });
    const u = await api(runUrl("unit?" + q));
    const figs = [el("figure", {}, el("img", { src: fileUrl(u.photo), alt: "photo" }),
      el("figcaption", {}, `${u.file} · ${u.class} · target ${u.target_name} (rank ${fmt(u.target_rank)})`))];
    if (u.mask) figs.push(el("figure", {}, el("img", { src: fileUrl(u.mask), alt: "mask" }), el("figcaption", {}, "dilated mask")));
    for (const m of u.maps) {
      figs.push(el("figure", { "data-method": m.method }, el("img", { src: fileUrl(m.picture), alt: m.method }),
        el("figcaption", {}, `${m.method}${m.CNN === "none" ? " (baseline)" : ""} · P ${fmt(m.P)} · lift ${fmt(m.lift)}` +
          ` · ${fmt(m.pointing_hit)}` + (m.ms !== null && m.ms !== undefined ? ` · ${fmt(m.ms, 0)} ms` : ""))));
    }
    $("unit").replaceChildren(el("h3", {}, `Photo ${u.id} (${u.class}), ${u.CNN}, ${u.size}`),
      el("div", { class: "maps", id: "unit-maps" }, ...figs));
    $("unit").scrollIntoView();
  } catch (e) { showError(e.message); }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function axes(root, w, h, pad, xLabel, yLabel, xMax, yMax) {
  root.append(svg("rect", { x: pad, y: 10, width: w - pad - 10, height: h - pad - 10, fill: "#fff", stroke: "#999" }));
  root.append(svg("text", { x: w / 2, y: h - 8, "text-anchor": "middle" }, xLabel));
  root.append(svg("text", { x: 12, y: h / 2, transform: `rotate(-90 12 ${h / 2})`, "text-anchor": "middle" }, yLabel));
  root.append(svg("text", { x: pad, y: h - pad + 14, "text-anchor": "middle" }, "0"));
  root.append(svg("text", { x: w - 10, y: h - pad + 14, "text-anchor": "middle" }, fmt(xMax, 2)));
  root.append(svg("text", { x: pad - 4, y: 14, "text-anchor": "end" }, fmt(yMax, 2)));
}

async function loadScatter() {
  const a = $("scatter-a").value, b = $("scatter-b").value;
  if (!a || !b) return;
  try {
    const q = filters(); q.set("a", a); q.set("b", b);
    const pts = await api(runUrl("scatter?" + q));
    const w = 380, h = 380, pad = 40, root = svg("svg", { width: w, height: h, id: "scatter-svg" });
    axes(root, w, h, pad, `P of ${a}`, `P of ${b}`, 1, 1);
    const X = (v) => pad + v * (w - pad - 10), Y = (v) => h - pad - v * (h - pad - 10);
    root.append(svg("line", { x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), stroke: "#ccc", "stroke-dasharray": "4" }));
    for (const p of pts) {
      const c = svg("circle", { class: "dot", cx: X(p.a), cy: Y(p.b), r: 5, fill: "#2a6fb0", "fill-opacity": 0.7 });
      c.append(svg("title", {}, `${p.id} ${p.class} · ${p.CNN} · ${p.size}: ${fmt(p.a)} / ${fmt(p.b)}`));
      c.onclick = () => openUnit(p.id, p.class, p.CNN, p.size);
      root.append(c);
    }
    $("scatter").replaceChildren(root, el("div", { class: "small" }, `${pts.length} photos; click a dot to open it`));
  } catch (e) { showError(e.message); }
}

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
function curve(c) {
  const w = 320, h = 220, pad = 40, root = svg("svg", { width: w, height: h });
  const all = Object.values(c.lines).flat();
  const xMax = Math.max(1, ...all.map((p) => p[0])), yMax = Math.max(1e-9, ...all.map((p) => p[1]));
  axes(root, w, h, pad, `${c.test}: step`, c.measure, xMax, yMax);
  const X = (v) => pad + (v / xMax) * (w - pad - 10), Y = (v) => h - pad - (v / yMax) * (h - pad - 10);
  Object.entries(c.lines).forEach(([m, pts], i) => {
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    const path = svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5 });
    path.append(svg("title", {}, m));
    root.append(path);
  });
  const legend = el("div", { class: "small" }, ...Object.keys(c.lines).map((m, i) =>
    el("span", { style: `color:${COLORS[i % COLORS.length]}` }, `■ ${m} `)));
  return el("figure", {}, root, legend);
}

async function loadCard() {
  try {
    const c = await api(runUrl("card"));
    if (c.card.length) {
      const cols = Object.keys(c.card[0]);
      $("card").replaceChildren(el("table", { id: "card-table" }, el("tr", {}, ...cols.map((k) => el("th", {}, k))),
        ...c.card.map((row) => el("tr", {}, ...cols.map((k) => el("td", {}, fmt(row[k])))))));
    }
    $("curves").replaceChildren(...(c.curves.length ? c.curves.map(curve) : ["this run made no stepped checks"]));
  } catch (e) { showError(e.message); }
}

$("run").onchange = () => openRun(parseInt($("run").value, 10));
$("refresh").onclick = async () => {
  showError("");
  try { state.runs[state.run] = await api(runUrl("refresh"), { method: "POST" }); await openRun(state.run); }
  catch (e) { showError(e.message); }
};
for (const s of document.querySelectorAll(".filter")) s.onchange = () => { loadGallery(); loadScatter(); };
$("scatter-a").onchange = loadScatter;
$("scatter-b").onchange = loadScatter;

loadInfo().catch((e) => showError(e.message));
loadRuns().catch((e) => showError(e.message));
