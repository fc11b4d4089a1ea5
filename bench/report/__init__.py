"""`bench report`: paper-style tables, heatmaps, cost plots, an HTML leaderboard and an elasticity card per backbone,
rebuilt from results alone. The results are read once (`build_report`); tables.py shapes them, significance.py adds
every cell's intervals and tests, notes.py words them under the tables, budget.py picks the best choice per budget
(bytes per vector, encode cost) and draws each precision's frontier, variants.py tabulates the cells beyond the prefix
grid, and html.py, plots.py, interactive.py, cell_details.py and card.py draw the views.

Never imports torch (a test checks it): reports must be cheap to rebuild anywhere the results are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench import stats
from bench.report import budget, card, html, interactive, notes, plots, significance, tables, variants
from bench.report.cell_details import ALPHA, cell_details
from bench.results import load_results


def build_report(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write tables/<backbone>/ (paper_<precision> for our own tasks, mteb-<type>_<precision> per mteb task type,
    budget-bytes and budget-cost: the best choice per budget, budget-precisions: every precision at equal bytes;
    subsets and query-layers where runs scored those variant cells), figures/<backbone>/ (frontier.png: each
    precision's best score per bytes), index.html and the plotly.min.js its interactive figures load (beside it: the
    page works offline), and cards/<backbone>.{md,json,png} (bench.report.card, of its pretrained model where it has
    one) under out_dir from what results_dir holds; return the files written.
    Methods are compared on one backbone at a time: a smoke run on a tiny model never shares a table or a colour
    scale with a real one.

    Partial results give a report of what exists; a missing results_dir raises BenchError (from load_results).
    """
    everything = load_results(results_dir, examples=True, variants=True)  # read once: every view takes this frame
    frame = everything[everything["variant"] == ""].reset_index(drop=True)  # the prefix grid: all but variants.py
    cells = tables.cell_stats(frame)
    # intervals, and paired tests of each method against the reference method, on the stored per-example values;
    # q-values over the family each mark belongs to (its table, or the rest of its grid)
    sizes = {backbone: tables.target_sizes(part) for backbone, part in tables.by_backbone(cells)}
    sig = _statistics(frame, sizes)
    out_dir = Path(out_dir)
    written, built, figures, budgets, variant_files = [], [], [], [], []
    for backbone, part in tables.by_backbone(cells):
        slug = plots.slugify(backbone)
        rows = frame[frame["backbone"] == backbone]
        provenance = tables.provenance(rows)
        files, budget_tables, frontier = _budget_views(rows, part, provenance, out_dir / "tables" / slug,
                                                       out_dir / "figures" / slug)
        written += files
        for stem, title, text in variants.variant_views(everything[everything["backbone"] == backbone]):
            written.append(_write(out_dir / "tables" / slug / f"{stem}.md", text.encode()))
            variant_files.append((backbone, title, written[-1].relative_to(out_dir).as_posix()))
        budgets.append((backbone, budget_tables, frontier.relative_to(out_dir).as_posix() if frontier else None))
        part_sig = _at_sizes(sig[sig["backbone"] == backbone], sizes[backbone])  # no tests on a reference backbone
        quality = backbone not in tables.REFERENCE_BACKBONES
        for name, family, group in tables.table_groups(part):  # the paper table, then one per mteb task type
            native = family is None
            scores = tables.NATIVE_SCORES if native else tables.mteb_scores(tables.family_records(frame, family))
            for precision in tables.precision_order(group):
                table_sig = part_sig[part_sig["precision"] == precision] if native else part_sig.iloc[:0]
                # mteb tables: no per-example values, so no marks; their caption (mteb_scores) says why
                note = notes.significance_note(table_sig, alpha=ALPHA) if native else ""
                marks = notes.significance_marks(table_sig, precision) if native else None
                caption = tables.caption(provenance, precision, scores, bold_best=quality)
                caption = f"{caption} {note if quality else tables.REFERENCE_NOTE}".strip()
                table = tables.paper_table(group, precision, caption=caption, annotations=marks, bold_best=quality)
                stem = out_dir / "tables" / slug / f"{plots.slugify(name)}_{plots.slugify(precision)}"
                written += [_write(stem.with_suffix(".md"), tables.to_markdown(table).encode()),
                            _write(stem.with_suffix(".tex"), tables.to_latex(table).encode())]
                built.append((backbone, table))
        for stem, title, png in plots.report_figures(part):
            path = _write(out_dir / "figures" / slug / f"{stem}.png", png)
            written.append(path)
            figures.append((backbone, title, path.relative_to(out_dir).as_posix()))
        written += card.write_card(results_dir, backbone, out_dir / "cards", card.default_method(frame, backbone),
                                   frame=frame)
    details = cell_details(cells, sig, frame)
    page = html.render_leaderboard(details, tables.provenance(frame), built, figures, budgets, variant_files)
    written.append(_write(out_dir / "index.html", page.encode()))
    if not cells.empty:  # the interactive figures' library, loaded by a relative <script src>
        written.append(_write(out_dir / interactive.PLOTLY_JS.name, interactive.PLOTLY_JS.read_bytes()))
    return written


def _budget_views(frame: pd.DataFrame, cells: pd.DataFrame, provenance: dict[str, list[str]], table_dir: Path,
                  figure_dir: Path) -> tuple[list[Path], list[budget.BudgetTable], Path | None]:
    """One backbone's budget tables (Markdown, LaTeX) and frontier figure: (files written, tables, figure or None)."""
    written, built = [], []
    for stem, table in budget.budget_views(frame, cells, provenance):
        written += [_write(table_dir / f"{stem}.md", budget.to_markdown(table).encode()),
                    _write(table_dir / f"{stem}.tex", budget.to_latex(table).encode())]
        built.append(table)
    written.append(_write(table_dir / "budget-precisions.md", budget.equal_bytes_markdown(cells).encode()))
    fig = budget.frontier_figure(cells)
    figure = _write(figure_dir / "frontier.png", plots.png_bytes(fig)) if fig is not None else None
    return written + ([figure] if figure is not None else []), built, figure


def _statistics(frame: pd.DataFrame, sizes: dict[str, list[tuple[int, int]]]) -> pd.DataFrame:
    """Every cell's intervals and paired tests against the reference method (cells without one say why in
    `reason`), with Benjamini-Hochberg q-values over the report's families: per backbone and precision, the cells
    of its paper table (the table's sizes) form one family, the rest of the grid another, so each mark is
    corrected over exactly the tests its table shows and each cell has one q-value in every view.
    A reference backbone (tables.REFERENCE_BACKBONES) keeps its intervals but loses its tests: it is no quality
    comparison, so no view marks it."""
    sig = significance.cell_statistics(frame, alpha=ALPHA)
    reference = sig["backbone"].isin(tables.REFERENCE_BACKBONES)
    sig.loc[reference, ["p_value", "seed_p_value"]] = np.nan
    sig.loc[reference, ["test", "seed_test"]] = ""
    sig.loc[reference, "reason"] = "a reproducibility reference, not a quality comparison"
    in_table = [(int(layer), int(dim)) in set(sizes.get(backbone, ()))
                for backbone, layer, dim in zip(sig["backbone"], sig["layer"], sig["dim"])]
    family = (sig["backbone"] + " " + sig["precision"] + pd.Series(in_table, index=sig.index, dtype=object).map(
        {True: " table", False: " grid"}))
    return stats.benjamini_hochberg(sig, family, ALPHA)


def _at_sizes(sig: pd.DataFrame, sizes: list[tuple[int, int]]) -> pd.DataFrame:
    """The tests at the table's sizes: its marks and the note under them."""
    cells = pd.MultiIndex.from_arrays([sig["layer"].astype(int), sig["dim"].astype(int)])
    return sig[cells.isin([(int(layer), int(dim)) for layer, dim in sizes])]


def _write(path: Path, data: bytes) -> Path:
    # bytes, not text mode: no platform newline translation, so the files are byte-identical everywhere
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
