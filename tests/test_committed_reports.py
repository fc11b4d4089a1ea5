"""The committed reports/ is what `bench report --results-dir results --out reports` makes of the committed results/,
byte for byte, and the README's tables are copied from it: a change to the report code or to results/ that is not
followed by regenerating reports/ (and the README) fails here."""

from __future__ import annotations

import re
from pathlib import Path

from bench.report import build_report

ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_committed_reports_regenerate_byte_identically(tmp_path):
    build_report(ROOT / "results", tmp_path / "reports")
    committed, fresh = _files(ROOT / "reports"), _files(tmp_path / "reports")
    assert sorted(committed) == sorted(fresh), "regenerate: bench report --results-dir results --out reports"
    differ = [name for name in committed if committed[name] != fresh[name]]
    assert not differ, f"{differ[:5]} differ; regenerate: bench report --results-dir results --out reports"


def test_committed_compression_reports_regenerate_byte_identically(tmp_path):
    """The compression suite's results (results-compression/, kept apart from the default suite's: the same methods
    evaluated two ways in one folder would be two configs of one cell) and their report."""
    build_report(ROOT / "results-compression", tmp_path / "reports")
    committed, fresh = _files(ROOT / "reports-compression"), _files(tmp_path / "reports")
    regenerate = "regenerate: bench report --results-dir results-compression --out reports-compression"
    assert sorted(committed) == sorted(fresh), regenerate
    differ = [name for name in committed if committed[name] != fresh[name]]
    assert not differ, f"{differ[:5]} differ; {regenerate}"


def test_the_readme_tables_are_copied_from_reports():
    """Every table the README marks as coming from a reports/ file (`<!-- from reports/X -->` above it) is made of
    that file's lines, in the file's order: its header and some of its rows, verbatim (so a number in the README is
    a number of the generated report, and a changed result that is not carried into the README fails here)."""
    readme = (ROOT / "README.md").read_text()
    sources = re.findall(r"<!-- from (reports(?:-compression)?/\S+) -->\n((?:\|.*\n)+)", readme)
    assert sources, "the README names no table from reports/"
    for name, table in sources:
        lines = (ROOT / name).read_text().splitlines()
        positions = [lines.index(row) if row in lines else -1 for row in table.splitlines()]
        missing = [row for row, p in zip(table.splitlines(), positions) if p < 0]
        assert not missing, f"README rows not in {name}: {missing}"
        assert positions == sorted(positions), f"README rows out of {name}'s order"
