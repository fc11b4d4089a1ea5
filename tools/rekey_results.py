"""Re-key committed results after a change that moved code fingerprints but no score.

A result file is named `<method>__<task>__<run_id>__<code>.csv.gz`, and its rows carry `code` (bench/fingerprint.py).
A restructuring that keeps every score bit for bit still changes the hashed files, so `bench run` would redo every
run. Once the scores are shown unchanged (rerun the reference with the new code and compare exactly: the closing
note of issue 21 gives the commands), this renames each file and its per-example file to the current fingerprint and
rewrites the `code` column, and the `task_meta` column to the task's current catalog record where only its list of
the precisions the task CAN score differs (a precision added to the known set, issue 24); any other difference in
the record is an error. Nothing else in a row changes: `git_sha` still names the commit that computed it.

The committed specs are rebuilt from their suites (the default suite with --seeds 0,1,2, the reference of `bench
reproduce`, and the compression suite of results-compression/); a file whose run_id none of them makes is an error,
so a re-key never guesses a spec.

    python tools/rekey_results.py            # dry run: what would be renamed
    python tools/rekey_results.py --write [--results-dir results-compression]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from bench import BenchError
from bench.reproduce import reference_specs
from bench.results import SUFFIX, examples_path, read_run_file, run_path
from bench.runner import make_specs, run_code
from bench.suites import compression, default
from bench.tasks import TASKS


def committed_specs() -> dict:
    specs = make_specs(replace(default(), seeds=(0, 1, 2))) + reference_specs() + make_specs(compression())
    return {s.run_id: s for s in specs}


def current_task_meta(path: Path, written: str, task: str) -> str:
    """The task's record as the current code writes it, where it differs from the written one in `precisions`
    alone."""
    old, new = json.loads(written), json.loads(TASKS.get(task).meta.to_json())
    if {k: v for k, v in old.items() if k != "precisions"} != {k: v for k, v in new.items() if k != "precisions"}:
        raise BenchError(f"{path}: the task record of {task} changed beyond its precision list; regenerate the run")
    return TASKS.get(task).meta.to_json()


def rekey(results_dir: Path, write: bool) -> int:
    specs, moved = committed_specs(), 0
    for path in sorted(results_dir.glob(f"*{SUFFIX}")):
        frame = read_run_file(path)
        run_id = frame["run_id"].iloc[0]
        if run_id not in specs:
            raise BenchError(f"{path}: run {run_id} is not a committed spec; regenerate it instead of re-keying")
        new = run_path(results_dir, specs[run_id], run_code(specs[run_id]))
        if new == path:
            continue
        moved += 1
        print(f"{path.name} -> {new.name}")
        if write:
            frame["code"] = new.name.removesuffix(SUFFIX).split("__")[3]
            frame["task_meta"] = current_task_meta(path, frame["task_meta"].iloc[0], specs[run_id].task)
            # written as bench.results.write_run writes (repr floats, gzip mtime 0), so only `code` differs
            frame.to_csv(new, index=False, compression={"method": "gzip", "mtime": 0})
            os.chmod(new, 0o644)
            if examples_path(path).exists():
                os.replace(examples_path(path), examples_path(new))
            path.unlink()
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--write", action="store_true", help="rename and rewrite (default: only list)")
    args = parser.parse_args()
    print(f"{rekey(args.results_dir, args.write)} run file(s) {'re-keyed' if args.write else 'to re-key'}")


if __name__ == "__main__":
    main()
