"""The README claims only what its committed tables test: every number its results prose quotes is a cell of
reports/tables/minilm/, and every difference it claims is a marked cell (Benjamini-Hochberg q < 0.05 against the
table's reference method), every "not distinguishable" an unmarked one.

The convention (README, "What this budget supports"): the numbers of a claim are followed by an HTML comment
    <!-- claim PRECISION (LAYER, DIM) COLUMN: METHOD[, METHOD...] OP REFERENCE -->
naming the table (reports/tables/minilm/paper_PRECISION.md), its row size and column, the methods compared and
OP: `<` or `>` (each method's cell is starred and below / above the reference's), `=` (unstarred: not
distinguishable). The decimal numbers written between the previous claim and this one are the methods' cells in
order, optionally followed by the reference's cell, exactly as the table prints them (or none at all). A decimal
number in the section that no claim covers fails. No oracle beyond the tables themselves: the marks are what
`bench report` wrote (tests/test_committed_reports.py holds the tables to results/).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "reports" / "tables" / "minilm"
SECTION_START, SECTION_END = "What this budget supports", "\n![STS-B Spearman x100 over layer x dim"
CLAIM = re.compile(r"<!-- claim (\S+) \((\d+), (\d+)\) ([^:]+): (.+?) ([<>=]) (\S+) -->")
DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")


def claims_section() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION_START):]
    return " ".join(section[:section.index(SECTION_END)].split())  # one line: a comment may wrap


def read_table(precision: str) -> tuple[str, dict[tuple[tuple[int, int], str, str], tuple[str, bool]]]:
    """(reference method named in the caption, {(size, method, column): (printed mean, starred)})."""
    text = (TABLES / f"paper_{precision}.md").read_text()
    reference = re.search(r"differs from (\S+) on the same examples", text).group(1)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")][2:]
    cells = {}
    for line in lines[1:]:
        size, method, *values = [c.strip() for c in line.strip("|").split("|")]
        layer, dim = map(int, size.strip("()").split(","))
        for column, value in zip(columns, values):
            value = value.removeprefix("**").removesuffix("**")  # bold: the size's best
            starred = value.endswith("\\*")
            cells[((layer, dim), method, column)] = (value.removesuffix("\\*").split(" ±")[0], starred)
    return reference, cells


def parsed_claims() -> list[dict]:
    """Each claim with the decimal numbers written since the previous one."""
    section, claims, start = claims_section(), [], 0
    assert section.count("<!--") == len(CLAIM.findall(section)), "a malformed <!-- claim ... --> comment"
    for match in CLAIM.finditer(section):
        precision, layer, dim, column, methods, op, reference = match.groups()
        claims.append({"text": section[start:match.start()][-120:], "precision": precision,
                       "size": (int(layer), int(dim)), "column": column, "methods": methods.split(", "),
                       "op": op, "reference": reference,
                       "quoted": DECIMAL.findall(section[start:match.start()])})
        start = match.end()
    assert not DECIMAL.findall(section[start:]), "a number after the last claim has no <!-- claim --> comment"
    return claims


CLAIMS = parsed_claims()


def test_the_readme_makes_claims():
    assert len(CLAIMS) >= 10


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: f"{c['precision']}{c['size']}{c['column']}:{c['op']}")
def test_every_claim_is_a_tested_cell_of_a_committed_table(claim):
    reference, cells = read_table(claim["precision"])
    assert claim["reference"] == reference, f"the table tests against {reference}, not {claim['reference']}"
    at = {method: cells[(claim["size"], method, claim["column"])] for method in [*claim["methods"], reference]}
    ref_value, _ = at[reference]
    printed = [at[m][0] for m in claim["methods"]]
    assert claim["quoted"] in ([], printed, printed + [ref_value]), (
        f"the README quotes {claim['quoted']} before {claim['text']!r}; the table prints {printed} against "
        f"{reference} {ref_value}")
    for method in claim["methods"]:
        value, starred = at[method]
        if claim["op"] == "=":
            assert not starred, f"{method} {value} is marked: it differs from {reference}"
        else:
            assert starred, f"{method} {value} is not marked: not distinguishable from {reference} {ref_value}"
            assert (float(value) < float(ref_value)) == (claim["op"] == "<"), f"{method} {value} vs {ref_value}"


def test_the_test_count_the_readme_quotes_is_the_tables():
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"over the table's (\d+) tests", readme).group(1)
    assert f"over the {quoted} tests of this table" in (TABLES / "paper_fp32.md").read_text()
