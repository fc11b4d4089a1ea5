"use strict";
// Hand-written on purpose: sorting, filters, URL state, CSV export and the figures' traces in plain JS keep the
// leaderboard free of dependencies and offline; plotly (beside the page) only draws the figures. The page holds
// its data once (bench.report.html.page_data): this script builds every display string, hover text and trace
// from it, as bench.report.cell_details words them (tests/test_browser.py compares). Every string from results is
// written with textContent (or as plotly text, escaped by plotText), never as markup.
const byId = id => document.getElementById(id);
const json = id => JSON.parse(byId(id).textContent);
const own = (obj, key) => (obj && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined);
const DATA = json("page-data");
const COLUMNS = DATA.columns;  // score columns, in the table's order
const TASKS = DATA.tasks;  // task -> its display name and the decimals its scores are printed with
const LABELS = DATA.labels;
const FIGURES = DATA.figures;
const TEMPLATE = byId("template-data") ? json("template-data") : null;
const ROWS = decode(DATA.rows);  // the leaderboard's rows; each gets its cells by task, and one per column
const CELLS = decode(DATA.cells);  // a row's score on one task, with its intervals and tests
for (const r of ROWS) {
  r.target = Boolean(r.target);
  r.byTask = new Map();
}
for (const c of CELLS) {
  c.row = ROWS[c.row];
  c.significant = Boolean(c.significant);
  c.row.byTask.set(c.task, c);
}
for (const r of ROWS) {
  r.cells = COLUMNS.map(c => (c.tasks.length > 1 ? familyCell(r, c) : r.byTask.get(c.tasks[0]) || null));
}
const FIGURE_CELLS = new Map();  // backbone and task -> their cells, in the report's order
for (const c of CELLS) {
  const key = c.row.backbone + "\u0000" + c.task;
  if (!FIGURE_CELLS.has(key)) FIGURE_CELLS.set(key, []);
  FIGURE_CELLS.get(key).push(c);
}
const table = byId("leaderboard");
const sortButtons = Array.from(table.querySelectorAll("button[data-sort]"));
const FIXED = sortButtons.map(b => b.dataset.sort).filter(key => !key.includes(":"));
const STATE = Array.from(document.querySelectorAll("[data-state]"));  // the controls the URL keeps
const DEFAULTS = new Map(STATE.map(c => [c, valueOf(c)]));
const CELL_FIELDS = ["mean", "std", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high", "p_value", "seed_p_value",
                     "q_value", "encode_ms"];
let sort = {key: "", dir: 0};  // no sort: the report's order (backbone, method, precision, layer, dim)

// ---- the data: tables of columns + rows, strings as indexes into DATA.values ----

function decode(data) {
  return data.rows.map(values => {
    const obj = {};
    data.columns.forEach((column, i) => {
      const v = values[i];
      obj[column] = own(DATA.values, column) && v !== null ? DATA.values[column][v] : v;
    });
    return obj;
  });
}

function familyCell(row, column) {  // the mean over the family's tasks (null where the row lacks one)
  return row[column.key] === null ? null : {mean: row[column.key], family: column};
}

// ---- display strings: bench.report.cell_details words them, this builds the same ----

const digitsOf = cell => TASKS[cell.family ? cell.family.tasks[0] : cell.task].digits;
const fixed = (x, cell) => x.toFixed(digitsOf(cell));
const pShown = value => (value < 0.001 ? "<0.001" : "=" + value.toFixed(3));
const plotText = text => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function scoreText(cell) {
  const text = fixed(cell.mean, cell);
  return cell.std === null || cell.std === undefined ? text : `${text} \u00b1 ${fixed(cell.std, cell)}`;
}

function intervalText(cell) {  // the two-level interval where the cell has several seeds, else the per-example one
  const [low, high] = cell.seed_ci_low !== null ? [cell.seed_ci_low, cell.seed_ci_high] : [cell.ci_low, cell.ci_high];
  return low === null ? "" : `[${fixed(low, cell)}, ${fixed(high, cell)}]`;
}

function pText(cell) {  // the marking test's p (seed-aware where there is one) and its q, starred as the tables
  if (cell.q_value === null) return "";
  const p = cell.seed_p_value === null ? cell.p_value : cell.seed_p_value;
  return `p${pShown(p)} q${pShown(cell.q_value)}` + (cell.significant ? "*" : "");
}

function detailText(cell) {
  return cell.family ? "" : [intervalText(cell), pText(cell)].filter(Boolean).join(" ");
}

function cellLines(cell) {  // cell_details.heading_lines + detail_lines
  const r = cell.row, ci = LABELS.ci;
  const seeds = cell.n === 1 ? "1 seed" : `mean of ${cell.n} seeds`;
  const lines = [`${r.method}: layer ${r.layer}, dim ${r.dim}, ${r.precision}`,
                 `${TASKS[cell.task].name} ${scoreText(cell)} (${seeds})`];
  if (cell.seed_ci_low !== null) {
    lines.push(`${ci} [${fixed(cell.seed_ci_low, cell)}, ${fixed(cell.seed_ci_high, cell)}] (bootstrap over ` +
               `seeds, then examples; ${cell.n} seeds)`);
  }
  if (cell.ci_low !== null) {
    lines.push(`${ci} [${fixed(cell.ci_low, cell)}, ${fixed(cell.ci_high, cell)}] (bootstrap over examples` +
               (cell.n > 1 ? ", seeds fixed)" : ")"));
  }
  if (cell.seed_p_value !== null) lines.push(`p${pShown(cell.seed_p_value)} vs ${cell.reference} (${cell.seed_test})`);
  if (cell.p_value !== null) lines.push(`p${pShown(cell.p_value)} vs ${cell.reference} (${cell.test})`);
  if (cell.q_value !== null) {
    lines.push(`q${pShown(cell.q_value)} (${LABELS.bh} over the ${cell.n_tests} tests of its family)` +
               (cell.significant ? `: differs at FDR ${LABELS.alpha}` : ""));
  } else if (cell.reason) {
    lines.push(`no test: ${cell.reason}`);
  }
  lines.push(`${r.bytes} bytes per vector`, `relative encode cost ${r.cost.toFixed(3)}`);
  if (cell.encode_ms !== null) {
    lines.push(`${cell.encode_ms.toFixed(1)} ms per 1k texts (measured, layers 1-${r.layer})`);
  }
  if (r.target) lines.push("target cell");
  return lines;
}

function titleText(cell) {  // the tooltip of a leaderboard cell
  return cell.family ? `${cell.family.name}: ${cell.family.metric}` : cellLines(cell).join("\n");
}

function hoverText(cell) {  // a figure's hover: plotly reads tags in text, so every line is escaped for it
  return cellLines(cell).map(plotText).join("<br>");
}


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
  value.textContent = scoreText(cell);
  td.appendChild(value);
  const detailLine = detailText(cell);
  if (detailLine) {
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = detailLine;
    td.appendChild(detail);
  }
  td.title = titleText(cell);
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

// ---- figures: plotly's layouts come with the page (bench.report.interactive), traces are built here ----

const axisSuffix = i => (i === 0 ? "" : String(i + 1));  // make_subplots names panel i's axes x, x2, x3, ...
const numbers = values => Array.from(new Set(values)).sort((a, b) => a - b);
const costOf = (cell, cost) => (cost === "encode_ms" ? cell.encode_ms : cell.row[cost]);

function present(cells, column) {  // the values the cells have, in the report's order (e.g. methods as the tables)
  const seen = new Set(cells.map(c => c.row[column]));
  return DATA.values[column].filter(v => seen.has(v));
}

function heatmapFigure(cells, precision, layout) {  // one panel per method, as interactive.heatmap_layout lays out
  const shown = cells.filter(c => c.row.precision === precision);
  const layers = numbers(shown.map(c => c.row.layer)), dims = numbers(shown.map(c => c.row.dim));
  const data = [], shapes = [];
  present(shown, "method").forEach((method, i) => {
    const at = new Map(shown.filter(c => c.row.method === method).map(c => [c.row.layer + "/" + c.row.dim, c]));
    const grid = layers.map(layer => dims.map(dim => at.get(layer + "/" + dim) || null));
    const axis = axisSuffix(i);
    data.push({type: "heatmap", x: dims.map(String), y: layers.map(String), coloraxis: "coloraxis", xgap: 1,
               ygap: 1, z: grid.map(line => line.map(c => c && c.mean)),
               text: grid.map(line => line.map(c => c && hoverText(c))), hovertemplate: "%{text}<extra></extra>",
               texttemplate: `%{z:.${digitsOf(shown[0])}f}`, xaxis: "x" + axis, yaxis: "y" + axis});
    grid.forEach((line, y) => line.forEach((c, x) => {  // red boxes: the method's target cells
      if (c && c.row.target) {
        shapes.push({type: "rect", x0: x - 0.5, x1: x + 0.5, y0: y - 0.5, y1: y + 0.5,
                     line: {color: "red", width: 2}, xref: "x" + axis, yref: "y" + axis});
      }
    }));
  });
  return {data, layout: {...layout, shapes}};
}

function frontier(points, cost) {  // bench.report.plots.pareto_frontier: no cheaper-or-equal point scores higher
  const ordered = points.slice().sort((a, b) => costOf(a, cost) - costOf(b, cost) || b.mean - a.mean);
  let best = -Infinity;
  return ordered.filter(p => (p.mean > best ? ((best = p.mean), true) : false));
}

// Score against each cost: one colour per method, one marker per precision, each method's frontier as a step
// line. Every trace's meta says which choice of the precision selector shows it (see shownAt), so one figure
// serves every choice.
function paretoFigure(cells, costs, layout) {
  const {palette, symbols} = FIGURES.style;
  const precisions = present(cells, "precision");
  const data = [];
  costs.forEach((cost, k) => {
    const axes = {xaxis: "x" + axisSuffix(k), yaxis: "y" + axisSuffix(k)};
    present(cells, "method").forEach((method, i) => {
      const color = palette[i % palette.length];
      const ours = cells.filter(c => c.row.method === method && costOf(c, cost) !== null);
      for (const precision of precisions) {
        const points = ours.filter(c => c.row.precision === precision);
        data.push({type: "scatter", x: points.map(c => costOf(c, cost)), y: points.map(c => c.mean),
                   mode: "markers", showlegend: false, legendgroup: method, meta: {precision},
                   marker: {color, size: 8, symbol: own(symbols, precision) || "x"}, text: points.map(hoverText),
                   hovertemplate: "%{text}<extra></extra>", ...axes});
      }
      for (const scope of ["all", ...precisions]) {  // the legend entry: one frontier per method is shown
        const front = frontier(scope === "all" ? ours : ours.filter(c => c.row.precision === scope), cost);
        data.push({type: "scatter", x: front.map(c => costOf(c, cost)), y: front.map(c => c.mean), mode: "lines",
                   name: plotText(method), legendgroup: method, showlegend: k === 0, meta: {frontier: scope},
                   hoverinfo: "skip", line: {color, width: 1.5, shape: "hv"}, ...axes});
      }
    });
  });
  return {data, layout};
}

function figureFor(section) {
  const part = name => section.querySelector(`[data-part="${name}"]`).value;
  const kind = section.dataset.kind, precision = part("precision");
  const spec = own(own(own(FIGURES, kind), part("backbone")), part("task"));
  const cells = FIGURE_CELLS.get(part("backbone") + "\u0000" + part("task"));
  if (spec === undefined || cells === undefined) return null;
  if (kind === "pareto") return paretoFigure(cells, spec.costs, structuredClone(FIGURES.layouts[spec.layout]));
  const layout = own(spec, precision);  // an index: 0 is a layout too
  return layout === undefined ? null : heatmapFigure(cells, precision, structuredClone(FIGURES.layouts[layout]));
}

// Which precision choice shows a Pareto trace, from its meta ("all" draws every precision).
function shownAt(meta, choice) {
  return "precision" in meta ? choice === "all" || choice === meta.precision : meta.frontier === choice;
}

function drawFigure(section) {  // plotly's promise: resolved once the figure is drawn
  const plot = section.querySelector(".plot"), missing = section.querySelector(".missing");
  const fig = figureFor(section);
  missing.hidden = Boolean(fig);
  if (!fig) {
    Plotly.purge(plot);
    return Promise.resolve();
  }
  if (section.dataset.kind === "pareto") {
    const choice = section.querySelector('[data-part="precision"]').value;
    for (const trace of fig.data) trace.visible = shownAt(trace.meta, choice);
  }
  fig.layout.template = TEMPLATE;
  return Plotly.react(plot, fig.data, fig.layout, {responsive: true, displaylogo: false});
}

function drawFigures() {
  const sections = document.querySelectorAll("section.figure");
  if (typeof Plotly === "undefined") {  // opened without the plotly.min.js that bench report writes beside it
    for (const s of sections) {
      const missing = s.querySelector(".missing");
      missing.textContent = "This figure needs plotly.min.js in the folder of this page.";
      missing.hidden = false;
    }
    return Promise.resolve();
  }
  return Promise.all(Array.from(sections, drawFigure));
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
// the load time tests/test_browser.py and benchmarks/leaderboard_load.py read: navigation start to figures drawn
drawFigures().then(() => performance.mark("leaderboard-drawn"));
