"""`bench run | report | ls | data | reproduce`: wiring only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bench import BenchError


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BenchError(f"expected a comma list of integers, got {text!r}") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark elastic text embeddings.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train (where needed) and evaluate methods on a suite")
    run.add_argument("--suite", default="default", help="preset (see `bench ls`); default: default")
    run.add_argument("--methods", default="all", help="comma list of methods, or all (default)")
    run.add_argument("--tasks", help="comma list of tasks (default: the suite's)")
    run.add_argument("--seeds", help="comma list of seeds (default: the suite's)")
    run.add_argument("--precisions", help="comma list of fp32,int8,binary,binary+rescore (default: the suite's)")
    run.add_argument("--layers", help="comma list of layers to evaluate (default: every layer)")
    run.add_argument("--dims", help="comma list of dims to evaluate (default: the suite's; a suite without dims "
                                    "halves down from the full width to no less than 16)")
    run.add_argument("--backbone", help="hub id or local model dir (default: the suite's)")
    run.add_argument("--train-data", help="snli, xnli-en, twitter-url, stsb, all-nli (hub) (default: the suite's)")
    run.add_argument("--steps", type=int, help="fine-tuning steps of every trained method (default: the suite's "
                     "budget; recorded with the results); starbucks' SMAE pre-training keeps its own pretrain_steps "
                     "(a method parameter of the suite, recorded in params): --steps does not scale it")
    _dirs(run)
    run.add_argument("--cache-dir", type=Path, help="encodings and checkpoints (default: $BENCH_CACHE_DIR or ./cache)")
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    report = sub.add_parser("report", help="tables, heatmaps and the HTML leaderboard from results/")
    report.add_argument("--results-dir", type=Path, default=Path("results"))
    report.add_argument("--out", type=Path, default=Path("reports"))
    sub.add_parser("ls", help="list methods, tasks and suites")
    data = sub.add_parser("data", help="data management")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download datasets from the Hugging Face hub into the data dir layout")
    fetch.add_argument("names", nargs="*", help="datasets (default: every evaluation set)")
    fetch.add_argument("--data-dir", type=Path)
    repro = sub.add_parser("reproduce", help="rerun the reference suite and compare with the reference in results/")
    _dirs(repro)
    repro.add_argument("--device", default="cpu", help="default: cpu (the tolerances are for CPU runs)")
    repro.add_argument("--write-reference", action="store_true",
                       help="run the reference runs that have no reference yet into --results-dir instead of comparing")
    repro.add_argument("--overwrite", action="store_true",
                       help="with --write-reference: rerun every reference run, print old vs new for every changed "
                            "row and replace the old files")
    repro.add_argument("--methods", help="comma list: only these methods' reference runs (default: all)")
    return parser


def _dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--data-dir", type=Path, help="default: $BENCH_DATA_DIR, else ./data")


def cmd_run(args) -> int:
    from bench.backbone import cache_root
    from bench.data import resolve_data_dir
    from bench.runner import make_specs, run_all
    from bench.suites import get_suite, with_overrides
    from methods import RunContext

    # absolute once, for this process and every one it starts (task lookup also finds BEIR folders by name there)
    os.environ["BENCH_DATA_DIR"] = str(resolve_data_dir(args.data_dir))
    suite = with_overrides(get_suite(args.suite), tasks=_names(args.tasks), seeds=_ints(args.seeds),
                           backbone=args.backbone, precisions=_names(args.precisions), layers=_ints(args.layers),
                           dims=_ints(args.dims), train_data=args.train_data, steps=args.steps)
    specs = make_specs(suite, args.methods)
    ctx = RunContext(resolve_data_dir(args.data_dir), args.results_dir, args.cache_dir or cache_root(), args.device)
    written = run_all(specs, ctx)
    print(f"{len(written)} new result file(s), {len(specs) - len(written)} already finished, in {args.results_dir}")
    return 0


def cmd_report(args) -> int:
    from bench.report import build_report

    paths = build_report(args.results_dir, args.out)
    print(f"wrote {len(paths)} file(s) under {args.out}")
    return 0


def cmd_ls(args) -> int:
    from bench.suites import SUITES
    from bench.tasks import TASKS
    from methods import METHODS

    print("methods: " + ", ".join(METHODS.names()))
    print("tasks:   " + ", ".join(TASKS.names()))
    for name, make in SUITES.items():
        print(f"suite {name}: {make().description}")
    return 0


def cmd_data(args) -> int:
    from bench.data import resolve_data_dir
    from bench.data.fetch import fetch

    for path in fetch(args.names, resolve_data_dir(args.data_dir)):
        print(path)
    return 0


def cmd_reproduce(args) -> int:
    from bench.data import resolve_data_dir
    from bench.reproduce import format_report, format_written, reference_specs, reproduce, write_reference

    if args.overwrite and not args.write_reference:
        raise BenchError("--overwrite replaces reference files, so it needs --write-reference; to compare with the "
                         "reference, drop --overwrite")
    specs = reference_specs(_names(args.methods))
    if args.write_reference:
        written = write_reference(args.results_dir, resolve_data_dir(args.data_dir), args.device, specs,
                                  overwrite=args.overwrite)
        print(format_written(written))
        return 0
    table = reproduce(args.results_dir, resolve_data_dir(args.data_dir), args.device, specs)
    print(format_report(table))
    return 0 if (table["status"] == "ok").all() else 1


def _quiet_libraries() -> None:
    """Keep our progress bars and errors readable: no per-shard bars or INFO chatter from libraries."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("bench").setLevel(logging.INFO)
    _quiet_libraries()
    handler = {"run": cmd_run, "report": cmd_report, "ls": cmd_ls, "data": cmd_data,
               "reproduce": cmd_reproduce}[args.command]
    try:
        return handler(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
