"""The prose under the tables: the sentence a table prints under its significance marks (which test, over what
resamples, which correction over how many tests, against which method), why cells have no test, and the marks
themselves, all worded from the frame bench/report/significance.py computes.
"""

from __future__ import annotations

import pandas as pd

from bench.stats import BH, N_BOOT, PAIRED_BOOTSTRAP, QUERIES, SENTENCES, SIGN_FLIP, TWO_LEVEL, marking_test


def significance_marks(stats: pd.DataFrame, precision: str, mark: str = "*") -> dict[tuple[str, int, int, str], str]:
    """bench.report.tables annotations for one precision: (method, layer, dim, task) -> mark where significant."""
    sig = stats[(stats["precision"] == precision) & stats["significant"].astype(bool)]
    return {(m, int(l), int(d), t): mark for m, l, d, t in zip(sig["method"], sig["layer"], sig["dim"], sig["task"])}


def untested_reasons(stats: pd.DataFrame, shown: int = 2) -> str:
    """Why cells have no test, most frequent reason first: '<n> cell(s): <reason>; ...'. "" when every cell but
    the reference's was tested."""
    reasons = stats.loc[stats["reason"] != "", "reason"].value_counts()
    if reasons.empty:
        return ""
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    text = "; ".join(f"{n} cell{'s' if n > 1 else ''}: {reason}" for reason, n in ordered[:shown])
    if len(ordered) > shown:
        text += f"; and {len(ordered) - shown} other reason(s)"
    return text


def test_description(stats: pd.DataFrame, n_boot: int = N_BOOT, n_perm: int = 10000) -> str:
    """Which tests decided the marks, as a caption names them, and what the STS resamples drew per task."""
    tested = stats[stats["test"] != ""]
    used = {marking_test(row) for row in tested.itertuples()}
    parts = []
    if TWO_LEVEL in used:
        parts.append(f"{TWO_LEVEL} where a cell or its reference has 2 or more seeds ({n_boot} resamples; seeds of "
                     "the two methods drawn independently, their spread rescaled by sqrt(S / (S - 1)) for S seeds)")
    if PAIRED_BOOTSTRAP in used:
        parts.append(f"STS: {PAIRED_BOOTSTRAP} of the Spearman difference ({n_boot} resamples)")
    sts = tested[tested["test"] == PAIRED_BOOTSTRAP]
    if not sts.empty:
        parts.append("STS resamples draw " + "; ".join(_drawn(label, sorted(set(part["task"])))
                                                       for label, part in sts.groupby("resampled", sort=True)))
    if SIGN_FLIP in used:
        by_position = sorted(set(tested.loc[tested["resampled"].str.startswith(f"{QUERIES} ("), "task"]))
        parts.append(f"retrieval: {SIGN_FLIP} of the mean per-query difference ({n_perm} resamples" +
                     (f"; queries paired by position for {', '.join(by_position)}: no query ids stored)"
                      if by_position else ")"))
    return "; ".join(parts)


def _drawn(label: str, tasks: list[str]) -> str:
    """'the sentences of sickr, stsb (why)': what one `Resampling.label` drew, for which tasks."""
    kind, _, why = label.partition(" (")
    if kind == SENTENCES:
        why = "their pairs share them; a pair counted as often as the product of its two sentences' counts)"
    return f"the {kind} of {', '.join(tasks)}" + (f" ({why}" if why else "")


def significance_note(stats: pd.DataFrame, alpha: float = 0.05, n_boot: int = N_BOOT, n_perm: int = 10000,
                      mark: str = "*") -> str:
    """The sentence a table prints under its marks: which test, which correction over how many tests, against
    which method, and why the cells without a test have none. `stats`: the table's cells (one family)."""
    if stats.empty:
        return ""
    untested = untested_reasons(stats)
    if not (stats["test"] != "").any():
        return f"No significance marks: {untested}." if untested else ""
    ref = ", ".join(sorted(set(stats["reference"]) - {""}))
    n_tests = int((stats["test"] != "").sum())
    note = (f"{mark}: differs from {ref} on the same examples, two-sided, at a false discovery rate of {alpha:g}: "
            f"{BH} q < {alpha:g} over the {n_tests} tests of this table; test: "
            f"{test_description(stats, n_boot, n_perm)}. No mark on the STS average.")
    return note + (f" No test for {untested}." if untested else "")
