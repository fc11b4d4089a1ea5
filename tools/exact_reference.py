"""Rerun `bench reproduce`'s reference runs with a fresh cache and compare every row with results/ EXACTLY.

`bench reproduce` allows each row a tolerance (another machine, another thread count). A change that claims to move
no score (a restructuring, before tools/rekey_results.py renames the committed files) must match bit for bit on the
machine that made the reference: this prints how many rows are identical, the training rows among them.

    python tools/exact_reference.py OUT [--no-rerun]   # OUT: where the rerun writes (--no-rerun: compare OUT only)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from bench.data import resolve_data_dir
from bench.drift import compare, is_quality
from bench.reproduce import load_reference, reference_specs, rerun
from bench.results import ROW_KEY, load_results

COST = "seconds|_ms|ms_per|memory"  # machine-dependent rows: never compared


def main(out: Path, again: bool) -> None:
    specs, start = reference_specs(), time.time()
    now = rerun(specs, resolve_data_dir(None), out, "cpu") if again else load_results(out)
    reference = load_reference(Path("results"), specs)
    rows = reference[~reference.metric.str.contains(COST)].merge(now[~now.metric.str.contains(COST)], on=ROW_KEY,
                                                                 how="outer", suffixes=("_ref", "_now"), indicator=True)
    same = (rows.score_ref == rows.score_now) | (rows.score_ref.isna() & rows.score_now.isna())
    train = rows.split == "train"
    print(f"non-cost rows {len(rows)}; in both {int((rows._merge == 'both').sum())}; identical bit for bit "
          f"{int(same.sum())}; training rows identical {int(same[train].sum())} of {int(train.sum())}")
    table = compare(reference, now)
    quality = table[[is_quality(m, p, s) for m, p, s in zip(table.metric, table.precision, table.split)]]
    paired = quality.dropna(subset=["reference", "now"])
    print(f"quality rows {len(quality)} of {len(specs)} runs; largest |now - reference| "
          f"{np.nanmax(np.abs(paired.reference - paired.now)) if len(paired) else float('nan'):.3g}; "
          f"{time.time() - start:.0f} s")
    if (~same).any():
        print(rows[~same][ROW_KEY + ["score_ref", "score_now", "_merge"]].head(20).to_string())
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), "--no-rerun" not in sys.argv)
