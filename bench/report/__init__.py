"""`bench report`: paper-style tables, heatmaps, cost plots and an HTML leaderboard, rebuilt from results alone.

Never imports torch (a test checks it): reports must be cheap to rebuild anywhere the results are.
"""

from __future__ import annotations

from pathlib import Path

from bench import BenchError, stats
from bench.report import html, plots, tables
from bench.results import load_results


def build_report(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write tables/<backbone>/, figures/<backbone>/ and index.html under out_dir from what results_dir holds;
    return the files written. Methods are compared on one backbone at a time: a smoke run on a tiny model never
    shares a table or a colour scale with a real one.

    Partial results give a report of what exists; a missing results_dir raises BenchError (from load_results).
    """
    frame = load_results(results_dir)
    cells = tables.cell_stats(frame)
    # paired test of each method against the reference method per target cell, on the stored per-example values
    sig = _significance(results_dir, cells)
    out_dir = Path(out_dir)
    written, built, figures = [], [], []
    for backbone, part in tables.by_backbone(cells):
        slug = plots.slugify(backbone)
        provenance = tables.provenance(frame[frame["backbone"] == backbone])
        part_sig = None if sig is None else sig[sig["backbone"] == backbone]
        note = (stats.significance_note(part_sig) if part_sig is not None
                else "No significance marks: per-example files missing.")
        for precision in tables.precision_order(part):
            marks = stats.significance_marks(part_sig, precision) if part_sig is not None else None
            caption = f"{tables.caption(provenance, precision)} {note}".strip()
            table = tables.paper_table(part, precision, caption=caption, annotations=marks)
            stem = out_dir / "tables" / slug / f"paper_{plots.slugify(precision)}"
            written += [_write(stem.with_suffix(".md"), tables.to_markdown(table).encode()),
                        _write(stem.with_suffix(".tex"), tables.to_latex(table).encode())]
            built.append((backbone, table))
        for stem, title, png in plots.report_figures(part):
            written.append(_write(out_dir / "figures" / slug / f"{stem}.png", png))
            figures.append((backbone, title, png))
    page = html.render_leaderboard(cells, tables.provenance(frame), built, figures)
    written.append(_write(out_dir / "index.html", page.encode()))
    return written


def _significance(results_dir: Path, cells):
    """Paired tests against the reference method, or None when some run lacks its per-example file (a report of
    what exists is still written; the caption says why there are no marks)."""
    try:
        sizes = {size for _, part in tables.by_backbone(cells) for size in tables.target_sizes(part)}
        return stats.cell_statistics(results_dir, sizes=sorted(sizes))
    except BenchError:
        return None


def _write(path: Path, data: bytes) -> Path:
    # bytes, not text mode: no platform newline translation, so the files are byte-identical everywhere
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
