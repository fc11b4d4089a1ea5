"""`bench report`: paper-style tables, heatmaps, cost plots and an HTML leaderboard, rebuilt from results alone.

Never imports torch (a test checks it): reports must be cheap to rebuild anywhere the results are.
"""

from __future__ import annotations

from pathlib import Path

from bench.report import html, plots, tables
from bench.results import load_results


def build_report(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write tables/, figures/ and index.html under out_dir from what results_dir holds; return the files written.

    Partial results give a report of what exists; a missing results_dir raises BenchError (from load_results).
    """
    frame = load_results(results_dir)
    cells = tables.cell_stats(frame)
    provenance = tables.provenance(frame)
    out_dir = Path(out_dir)
    written = []
    built = []
    for precision in tables.precision_order(cells):
        table = tables.paper_table(cells, precision, caption=tables.caption(provenance, precision))
        stem = f"paper_{plots.slugify(precision)}"
        written += [_write(out_dir / "tables" / f"{stem}.md", tables.to_markdown(table).encode()),
                    _write(out_dir / "tables" / f"{stem}.tex", tables.to_latex(table).encode())]
        built.append(table)
    figures = plots.report_figures(cells)
    written += [_write(out_dir / "figures" / f"{stem}.png", png) for stem, _, png in figures]
    page = html.render_leaderboard(cells, provenance, built, figures)
    written.append(_write(out_dir / "index.html", page.encode()))
    return written


def _write(path: Path, data: bytes) -> Path:
    # bytes, not text mode: no platform newline translation, so the files are byte-identical everywhere
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
