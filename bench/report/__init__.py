"""`bench report`: paper-style tables, heatmaps, cost plots and an HTML leaderboard, rebuilt from results alone.

Never imports torch (a test checks it): reports must be cheap to rebuild anywhere the results are.
"""

from __future__ import annotations

from pathlib import Path

from bench import BenchError, stats
from bench.report import html, plots, tables
from bench.results import load_results


def build_report(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write tables/, figures/ and index.html under out_dir from what results_dir holds; return the files written.

    Partial results give a report of what exists; a missing results_dir raises BenchError (from load_results).
    """
    frame = load_results(results_dir)
    cells = tables.cell_stats(frame)
    # paired test of each method against the reference method per target cell, on the stored per-example values
    sig = _significance(results_dir, cells)
    provenance = tables.provenance(frame)
    out_dir = Path(out_dir)
    written = []
    built = []
    for precision in tables.precision_order(cells):
        note = stats.significance_note(sig) if sig is not None else "No significance marks: per-example files missing."
        table = tables.paper_table(cells, precision, caption=(tables.caption(provenance, precision) + " " + note).strip(),
                                   annotations=stats.significance_marks(sig, precision) if sig is not None else None)
        stem = f"paper_{plots.slugify(precision)}"
        written += [_write(out_dir / "tables" / f"{stem}.md", tables.to_markdown(table).encode()),
                    _write(out_dir / "tables" / f"{stem}.tex", tables.to_latex(table).encode())]
        built.append(table)
    figures = plots.report_figures(cells)
    written += [_write(out_dir / "figures" / f"{stem}.png", png) for stem, _, png in figures]
    page = html.render_leaderboard(cells, provenance, built, figures)
    written.append(_write(out_dir / "index.html", page.encode()))
    return written


def _significance(results_dir: Path, cells):
    """Paired tests against the reference method, or None when some run lacks its per-example file (a report of
    what exists is still written; the caption says why there are no marks)."""
    try:
        return stats.cell_statistics(results_dir, sizes=tables.target_sizes(cells))
    except BenchError:
        return None


def _write(path: Path, data: bytes) -> Path:
    # bytes, not text mode: no platform newline translation, so the files are byte-identical everywhere
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
