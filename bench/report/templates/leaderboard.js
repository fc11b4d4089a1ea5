"use strict";
// Hand-written on purpose: sorting, filters, URL state and CSV export in plain JS keep the leaderboard free of
// dependencies and offline; plotly (beside the page) draws only the interactive figures. Every string from
// results is written with textContent (or as plotly text, escaped in bench.report.interactive), never as markup.
const byId = id => document.getElementById(id);
const json = id => JSON.parse(byId(id).textContent);
const own = (obj, key) => (obj && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined);
const ROWS = json("rows-data");
const COLUMNS = json("columns-data");  // score columns, in the table's order
const FIGURES = byId("figures-data") ? json("figures-data") : null;
const TEMPLATE = byId("template-data") ? json("template-data") : null;
const table = byId("leaderboard");
const sortButtons = Array.from(table.querySelectorAll("button[data-sort]"));
const FIXED = sortButtons.map(b => b.dataset.sort).filter(key => !key.includes(":"));
const STATE = Array.from(document.querySelectorAll("[data-state]"));  // the controls the URL keeps
const DEFAULTS = new Map(STATE.map(c => [c, valueOf(c)]));
const CELL_FIELDS = ["mean", "std", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high", "p_value", "seed_p_value",
                     "q_value", "encode_ms"];
let sort = {key: "", dir: 0};  // no sort: the report's order (backbone, method, precision, layer, dim)

function valueOf(control) {
  return control.type === "checkbox" ? (control.checked ? "1" : "") : control.value;
}

function setValue(control, value) {
  if (control.type === "checkbox") {
    control.checked = value === "1";
    return;
  }
  control.value = value;
  if (control.tagName === "SELECT" && control.selectedIndex < 0) control.value = DEFAULTS.get(control);
}

function saveState() {
  const params = new URLSearchParams();
  for (const c of STATE) if (valueOf(c) !== DEFAULTS.get(c)) params.set(c.id, valueOf(c));
  if (sort.dir) {
    params.set("sort", sort.key);
    params.set("dir", sort.dir > 0 ? "asc" : "desc");
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
}

function restoreState() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const c of STATE) setValue(c, params.has(c.id) ? params.get(c.id) : DEFAULTS.get(c));
  const key = params.get("sort") || "";
  sort = sortButtons.some(b => b.dataset.sort === key)
    ? {key, dir: params.get("dir") === "asc" ? 1 : -1} : {key: "", dir: 0};
}

function sortValue(row, key) {
  const i = COLUMNS.findIndex(c => c.key === key);
  if (i < 0) return row[key];
  return row.cells[i] ? row.cells[i].mean : null;
}

function compare(a, b) {
  const x = sortValue(a, sort.key), y = sortValue(b, sort.key);
  if (x === y) return 0;
  if (x === null) return 1;  // missing scores last in either direction
  if (y === null) return -1;
  return (x < y ? -1 : 1) * sort.dir;
}

function inRange(value, name) {
  const low = byId(name + "-min").value, high = byId(name + "-max").value;
  return (low === "" || value >= Number(low)) && (high === "" || value <= Number(high));
}

function shownRows() {
  const words = byId("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const chosen = (id, value) => !byId(id).value || byId(id).value === value;
  const rows = ROWS.filter(r =>
    chosen("f-backbone", r.backbone) && chosen("f-method", r.method) && chosen("f-precision", r.precision) &&
    (!byId("f-target").checked || r.target) &&
    inRange(r.layer, "layer") && inRange(r.dim, "dim") && inRange(r.bytes, "bytes") &&
    words.every(w => [r.backbone, r.method, r.layer, r.dim, r.precision].join(" ").toLowerCase().includes(w)));
  if (sort.dir) rows.sort(compare);  // stable: ties keep the report's order
  return rows;
}

function fixedText(row, key) {
  if (key === "cost") return row.cost.toFixed(3);
  if (key === "target") return row.target ? "yes" : "";
  return String(row[key]);
}

function scoreCell(tr, cell) {
  const td = tr.insertCell();
  td.className = "num";
  if (!cell) return;
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = cell.text;
  td.appendChild(value);
  if (cell.detail) {
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = cell.detail;
    td.appendChild(detail);
  }
  td.title = cell.title;
}

function render() {
  const rows = shownRows();
  const body = document.createElement("tbody");
  for (const r of rows) {
    const tr = body.insertRow();
    for (const key of FIXED) {
      const td = tr.insertCell();
      td.textContent = fixedText(r, key);
      if (typeof r[key] === "number") td.className = "num";
    }
    r.cells.forEach(cell => scoreCell(tr, cell));
  }
  table.replaceChild(body, table.tBodies[0]);
  for (const b of sortButtons) {
    b.parentElement.setAttribute("aria-sort",
      b.dataset.sort === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
  }
  byId("count").textContent = rows.length + " of " + ROWS.length + " rows";
}

function csvField(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;  // never a spreadsheet formula
  return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

function csvText(rows) {
  const fields = c => (c.tasks.length > 1 ? ["mean"] : CELL_FIELDS);  // a family average has no statistics
  const header = ["backbone", "method", "layer", "dim", "precision", "bytes_per_vector", "rel_cost", "is_target"];
  for (const c of COLUMNS) for (const f of fields(c)) header.push(c.csv + "_" + f);
  const lines = [header];
  for (const r of rows) {
    const line = [r.backbone, r.method, r.layer, r.dim, r.precision, r.bytes, r.cost, r.target];
    COLUMNS.forEach((c, i) => { for (const f of fields(c)) line.push(r.cells[i] ? r.cells[i][f] : null); });
    lines.push(line);
  }
  return lines.map(line => line.map(csvField).join(",")).join("\r\n") + "\r\n";
}

function downloadCsv() {
  const url = URL.createObjectURL(new Blob([csvText(shownRows())], {type: "text/csv"}));
  const link = document.createElement("a");
  link.href = url;
  link.download = "leaderboard.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function figureFor(section) {
  const part = name => section.querySelector(`[data-part="${name}"]`).value;
  const byTask = own(own(own(FIGURES, section.dataset.kind), part("backbone")), part("task"));
  return section.dataset.kind === "heatmap" ? own(byTask, part("precision")) : byTask;
}

// Which precision choice shows a Pareto trace, from its meta (see bench.report.interactive.pareto;
// "all" is ALL_PRECISIONS there).
function shownAt(meta, choice) {
  return "precision" in meta ? choice === "all" || choice === meta.precision : meta.frontier === choice;
}

function drawFigure(section) {
  const plot = section.querySelector(".plot"), missing = section.querySelector(".missing");
  const fig = figureFor(section);
  missing.hidden = Boolean(fig);
  if (!fig) {
    Plotly.purge(plot);
    return;
  }
  const copy = structuredClone(fig);  // plotly writes into what it draws; the stored figure stays as built
  if (section.dataset.kind === "pareto") {
    const choice = section.querySelector('[data-part="precision"]').value;
    for (const trace of copy.data) trace.visible = shownAt(trace.meta, choice);
  }
  copy.layout.template = TEMPLATE;
  Plotly.react(plot, copy.data, copy.layout, {responsive: true, displaylogo: false});
}

function drawFigures() {
  const sections = document.querySelectorAll("section.figure");
  if (typeof Plotly === "undefined") {  // opened without the plotly.min.js that bench report writes beside it
    for (const s of sections) {
      const missing = s.querySelector(".missing");
      missing.textContent = "This figure needs plotly.min.js in the folder of this page.";
      missing.hidden = false;
    }
    return;
  }
  sections.forEach(drawFigure);
}

for (const b of sortButtons) {
  b.addEventListener("click", () => {  // a button: Enter and Space work from the keyboard too
    const key = b.dataset.sort;
    // a score column sorts best first, the others smallest first; pressing again reverses
    sort = key === sort.key ? {key, dir: -sort.dir} : {key, dir: key.includes(":") ? -1 : 1};
    render();
    saveState();
  });
}
for (const c of STATE) {
  const section = c.closest("section.figure");
  const typing = c.tagName === "INPUT" && c.type !== "checkbox";
  c.addEventListener(typing ? "input" : "change", () => {
    if (section) {
      if (typeof Plotly !== "undefined") drawFigure(section);
    } else {
      render();
    }
    saveState();
  });
}
byId("export").addEventListener("click", downloadCsv);
window.addEventListener("hashchange", () => {  // a pasted or edited link
  restoreState();
  render();
  drawFigures();
});
restoreState();
render();
drawFigures();
