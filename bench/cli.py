"""`bench run | status | report | card | export | ls | data | reproduce`: wiring only."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from bench import BenchError, __version__
from bench.precisions import KNOWN

# The committed results (the default suite and the reference of `bench reproduce`) and where a user's own runs go:
# `bench run` never writes into the committed folder unless told to with --results-dir.
COMMITTED_RESULTS = Path("results")
USER_RESULTS = Path("runs")


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BenchError(f"expected a comma list of integers, got {text!r}") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def _prompts(text: str | None) -> tuple[tuple[str, str], ...] | None:
    """`query=search_query: ,document=search_document: ` -> (("document", ...), ("query", ...)). A comma starts a new
    role only when a role name and "=" follow it, so prompts may hold commas; a literal backslash-n is a newline
    (Qwen3's instructions end in "\\nQuery:"); `role=@name` picks the model's prompt of that name."""
    if text is None:
        return None
    from bench.spec import ROLES

    parts = re.split(rf",(?=\s*(?:{'|'.join(ROLES)})=)", text)
    pairs = []
    for part in parts:
        role, sep, prompt = part.partition("=")
        if not sep:
            raise BenchError(f"expected --prompts ROLE=TEXT[,ROLE=TEXT] with roles {', '.join(ROLES)}; got {part!r}")
        pairs.append((role.strip(), prompt.replace("\\n", "\n")))
    return tuple(sorted(pairs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark elastic text embeddings.")
    parser.add_argument("--version", action="version", version=f"elastic-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train (where needed) and evaluate methods on a suite")
    _selection(run)
    _dirs(run, default=USER_RESULTS)
    run.add_argument("--compare-with",
                     help="a results folder to compare this run's cells with at the end, run by run (same run_id), "
                          "within `bench reproduce`'s tolerances; none: no comparison (default: results/, the "
                          "committed results, where it exists)")
    run.add_argument("--report", type=Path, metavar="DIR",
                     help="at the end, build the report of --results-dir into DIR (as `bench report` would)")
    run.add_argument("--cache-dir", type=Path, help="encodings and checkpoints (default: $BENCH_CACHE_DIR or ./cache)")
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (runs, jobs, finished or not); run nothing")
    jobs = run.add_argument_group("launchers", "one job per method x hyperparameters x seed, through submitit")
    jobs.add_argument("--launcher", choices=("in-process", "local", "slurm"), default="in-process",
                      help="in-process (default): this process; local: parallel processes here; slurm: a job array")
    jobs.add_argument("--max-parallel", type=int, default=1,
                      help="local: jobs running at once; slurm: array jobs running at once (default: 1)")
    jobs.add_argument("--gpus", type=int, default=0, help="GPUs per job; several: DDP, one process each (default: 0)")
    jobs.add_argument("--time", type=_minutes, default=24 * 60,
                      help="time limit per job: minutes, H:MM:SS or D-HH:MM:SS (default: 24:00:00)")
    jobs.add_argument("--mem", help="slurm: memory per job, e.g. 32G")
    jobs.add_argument("--cpus-per-task", type=int, help="slurm: CPUs per process")
    jobs.add_argument("--slurm-partition", help="slurm: the partition to submit to")
    status = sub.add_parser("status", help="finished, running, failed and missing runs of a selection (as bench run)")
    _selection(status)
    status.add_argument("--results-dir", type=Path, default=USER_RESULTS, help=f"default: {USER_RESULTS}/")
    report = sub.add_parser("report", help="tables, heatmaps and the HTML leaderboard from results/")
    report.add_argument("--results-dir", type=Path, default=COMMITTED_RESULTS,
                        help=f"default: {COMMITTED_RESULTS}/ (the committed results; your runs: {USER_RESULTS}/)")
    report.add_argument("--out", type=Path, default=Path("reports"), help="default: reports/")
    card = sub.add_parser("card", help="an elasticity card of a backbone (Markdown, JSON manifest, one figure) from "
                                       "results/")
    card.add_argument("--backbone", required=True, help="the backbone, as the results name it (e.g. minilm)")
    card.add_argument("--method", default="pretrained", help="whose cells (default: pretrained, the model as published)")
    card.add_argument("--results-dir", type=Path, default=COMMITTED_RESULTS, help=f"default: {COMMITTED_RESULTS}/")
    card.add_argument("--out", type=Path, default=Path("reports/cards"),
                      help="writes <out>/<backbone>.md, .json and .png (default: reports/cards)")
    export = sub.add_parser("export", help="write results in another tool's format")
    export_sub = export.add_subparsers(dest="export_format", required=True)
    mteb = export_sub.add_parser("mteb", help="mteb's results layout: each (layer, dim, precision) cell an experiment")
    mteb.add_argument("--results-dir", type=Path, default=COMMITTED_RESULTS, help=f"default: {COMMITTED_RESULTS}/")
    mteb.add_argument("--out", type=Path, required=True,
                      help="the mteb cache folder to write (its results/<org>__<model>/<revision>/...)")
    sub.add_parser("ls", help="list methods, tasks and suites")
    data = sub.add_parser("data", help="data management")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download datasets from the Hugging Face hub into the data dir layout")
    fetch.add_argument("names", nargs="*", help="datasets (default: every evaluation set)")
    fetch.add_argument("--data-dir", type=Path, help="where to write (default: $BENCH_DATA_DIR, else ./data)")
    repro = sub.add_parser("reproduce", help="rerun the reference suite and compare with the reference in results/")
    _dirs(repro, default=COMMITTED_RESULTS)
    repro.add_argument("--device", default="cpu", help="default: cpu (the tolerances are for CPU runs)")
    repro.add_argument("--write-reference", action="store_true",
                       help="run the reference runs that have no reference yet into --results-dir instead of comparing")
    repro.add_argument("--overwrite", action="store_true",
                       help="with --write-reference: rerun every reference run, print old vs new for every changed "
                            "row and replace the old files")
    repro.add_argument("--methods", help="comma list: only these methods' reference runs (default: all of them)")
    return parser


def _selection(p: argparse.ArgumentParser) -> None:
    """What runs: the same options for `bench run` and `bench status`."""
    p.add_argument("--suite", default="default", help="preset (see `bench ls`); default: default")
    p.add_argument("--methods", help="comma list of methods, or all (default: the suite's, mostly all)")
    p.add_argument("--tasks", help="comma list of tasks, mteb:NAME and mteb:PATH.py:CLASS included (default: the "
                                   "suite's)")
    p.add_argument("--seeds", help="comma list of seeds (default: the suite's)")
    p.add_argument("--precisions", help=f"comma list of known precisions (bench/precisions.py, README 'Precisions'): "
                   f"{','.join(KNOWN)} (default: the suite's)")
    p.add_argument("--layers", help="comma list of layers to evaluate (default: every layer)")
    p.add_argument("--dims", help="comma list of dims to evaluate (default: the suite's; with --backbone, halving "
                                  "down from the width the model serves)")
    p.add_argument("--backbone", help="a registered public model (see `bench ls`), hub id or local model dir "
                                      "(default: the suite's)")
    p.add_argument("--pooling", help="override the model's pooling: cls, mean, max, lasttoken, weightedmean, "
                                     "mean_sqrt_len_tokens (default: auto, the model's own)")
    p.add_argument("--prompts", help='override prompts by role, e.g. query="search_query: ",document="search_'
                                     'document: " (roles: default, query, document; ROLE=@name picks the '
                                     "model's prompt of that name; default: the model's own)")
    p.add_argument("--head-layers", help="every (default) or last: the layers the model's modules after pooling "
                                         "(Dense, LayerNorm, Normalize) apply to")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow models that run code from their own repository (off by default)")
    p.add_argument("--train-data", help="snli, xnli-en, twitter-url, stsb, all-nli (hub) (default: the suite's)")
    p.add_argument("--store-dtype", help="float32 (default) or float16: how encodings are cached (recorded)")
    p.add_argument("--random-subsets", type=int, help="seeded draws of random coordinates beside every prefix below "
                   "the full width (bench/variants.py; default: the suite's, 0 but for compression)")
    p.add_argument("--asymmetric-dims", help="comma list of grid dims at which every query layer x document layer "
                   "is scored (retrieval; default: the suite's, none but for compression)")
    p.add_argument("--variant-precisions", help="comma list of precisions the random subsets and query layers are "
                   "scored at (default: the suite's; fp32,int8,binary)")
    p.add_argument("--dtype", help="fp32 or bf16: compute dtype of training and encoding, on CPU and CUDA (default: "
                                   "the suite's, fp32 but for paper-sts; in the run key and the dtype column)")
    p.add_argument("--steps", type=int, help="fine-tuning steps of every trained method (default: the suite's "
                   "budget; recorded with the results); starbucks' SMAE pre-training keeps its own pretrain_steps "
                   "(a method parameter of the suite, recorded in params): --steps does not scale it")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                   help="a method hyperparameter (repeatable); a comma list sweeps it: starbucks-srl.kl_weight=0.1,0.3")


def _minutes(text: str) -> int:
    """Slurm's time formats: minutes, H:MM:SS (or MM:SS), D-HH[:MM[:SS]] -> whole minutes (rounded up)."""
    try:
        days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
        parts = [int(x) for x in clock.split(":")]
        if "-" in text:
            parts += [0] * (3 - len(parts))
            seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        elif len(parts) == 1:
            seconds = parts[0] * 60
        else:
            seconds = sum(v * m for v, m in zip(reversed(parts), (1, 60, 3600)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes, H:MM:SS or D-HH:MM:SS, got {text!r}") from None
    return max(1, -(-seconds // 60))


def _dirs(p: argparse.ArgumentParser, default: Path) -> None:
    p.add_argument("--results-dir", type=Path, default=default, help=f"default: {default}/")
    p.add_argument("--data-dir", type=Path, help="default: $BENCH_DATA_DIR, else ./data")


def _specs(args) -> list:
    """The RunSpecs of `bench run` / `bench status`: the suite with the command line's overrides and sweeps."""
    from bench.overrides import parse_sets
    from bench.runner import make_specs
    from bench.suites import get_suite, with_overrides
    from methods import METHODS

    suite = with_overrides(get_suite(args.suite), tasks=_names(args.tasks), seeds=_ints(args.seeds),
                           backbone=args.backbone, precisions=_names(args.precisions), layers=_ints(args.layers),
                           dims=_ints(args.dims), train_data=args.train_data, steps=args.steps, pooling=args.pooling,
                           prompts=_prompts(args.prompts), head_layers=args.head_layers, store_dtype=args.store_dtype,
                           dtype=args.dtype, random_subsets=args.random_subsets,
                           asymmetric_dims=_ints(args.asymmetric_dims),
                           variant_precisions=_names(args.variant_precisions))
    methods = args.methods or suite.methods
    return make_specs(suite, methods, parse_sets(args.sets, METHODS.expand(methods)),
                      trust_remote_code=args.trust_remote_code)


def cmd_run(args) -> int:
    from bench import phases

    phases.reset()  # one profile per command, also when a process runs several (tests do)
    if args.compare_with not in (None, "none") and not Path(args.compare_with).is_dir():
        raise BenchError(f"--compare-with {args.compare_with}: no such results folder; pass an existing folder or "
                         "none")
    from bench.data import resolve_data_dir, use_data_dir

    # task names that are BEIR folders of the data dir resolve there; the processes a run starts get it in their
    # RunContext (not through the environment: nothing outlives the command)
    with use_data_dir(resolve_data_dir(args.data_dir)) as data_dir:
        return _run(args, data_dir)


def _run(args, data_dir: Path) -> int:
    from bench import phases
    from bench.hub import cache_root
    from bench.runner import run_all
    from methods import RunContext

    specs = _specs(args)
    if args.dry_run:
        return _print_plan(specs, args)
    if args.launcher != "slurm":  # runs on this machine: a dtype it cannot compute fails before any work
        from bench.devices import check_dtype_supported, pick_device

        for dtype in sorted({spec.dtype for spec in specs}):
            check_dtype_supported(dtype, pick_device(args.device))
    ctx = RunContext(data_dir, args.results_dir, args.cache_dir or cache_root(), args.device,
                     trust_remote_code=args.trust_remote_code)
    if args.launcher == "in-process":
        phases.add("start-up", phases.process_seconds())  # imports, specs: everything before the first run
        written = run_all(specs, ctx)
        print(f"{len(written)} new result file(s), {len(specs) - len(written)} already finished, in {args.results_dir}")
        print(phases.format_profile(phases.totals(), phases.process_seconds()))
        code = 0
    else:
        code = _launch(specs, ctx, args)
        if args.launcher == "slurm":  # submitted, not run: nothing to compare or report yet
            return code
    _compare_and_report(specs, args)
    return code


def _compare_and_report(specs: list, args) -> None:
    """The end of a run: how its cells compare with the committed results, and its report if asked for."""
    from bench.drift import compare_with_committed, format_comparison

    committed = Path(args.compare_with or COMMITTED_RESULTS)
    if args.compare_with != "none" and committed.is_dir() and committed.resolve() != args.results_dir.resolve():
        print(format_comparison(compare_with_committed(args.results_dir, committed, specs), committed, specs))
    if args.report is not None:
        from bench.report import build_report

        build_report(args.results_dir, args.report)
        print(f"report: {args.report / 'index.html'} (tables and figures under {args.report})")


def _print_plan(specs: list, args) -> int:
    from bench.status import format_states, run_states

    table = run_states(specs, args.results_dir)
    print(format_states(table))
    todo = table[table["state"] != "finished"]
    print(f"dry run: {len(todo)} run(s) in {todo['group'].nunique()} job(s) to run with --launcher {args.launcher}; "
          "nothing was run")
    return 0


def _launch(specs: list, ctx, args) -> int:
    from bench.launch import Resources, launch
    from bench.results import is_finished
    from bench.runner import run_code

    resources = Resources(gpus=args.gpus, time_min=args.time, mem=args.mem, cpus_per_task=args.cpus_per_task,
                          partition=args.slurm_partition, max_parallel=args.max_parallel)
    finished = sum(is_finished(args.results_dir, s, run_code(s)) for s in specs)
    outcomes = launch(specs, ctx, args.launcher, resources)
    if args.launcher == "slurm":
        ids = ", ".join(o.job_id for o in outcomes)
        print(f"submitted {len(outcomes)} job(s) for {len(specs)} run(s): {ids}; follow them with "
              f"`bench status --suite {args.suite} --results-dir {args.results_dir}` (same selection)")
        return 0
    for o in outcomes:
        log = "" if o.error is None or o.log in o.error else f" (log: {o.log})"
        state = f"{len(o.written)} new result file(s)" if o.error is None else f"FAILED: {o.error}{log}"
        print(f"job {o.job_id} {o.group[0].method} seed {o.group[0].seed}: {state}")
    failed = sum(o.error is not None for o in outcomes)
    print(f"{sum(len(o.written) for o in outcomes)} new result file(s), {finished} already finished, {failed} failed "
          f"job(s), in {args.results_dir}")
    return 1 if failed else 0


def cmd_status(args) -> int:
    from bench.status import format_states, run_states

    print(format_states(run_states(_specs(args), args.results_dir)))
    return 0


def cmd_report(args) -> int:
    from bench.report import build_report

    paths = build_report(args.results_dir, args.out)
    print(f"wrote {len(paths)} file(s) under {args.out}")
    return 0


def cmd_card(args) -> int:
    from bench.report.card import write_card

    for path in write_card(args.results_dir, args.backbone, args.out, args.method):
        print(path)
    return 0


def cmd_export(args) -> int:
    from bench.export_mteb import export_mteb

    paths = export_mteb(args.results_dir, args.out)
    print(f"wrote {len(paths)} mteb task result(s) under {args.out}")
    return 0


def cmd_ls(args) -> int:
    from bench.models import PUBLIC_MODELS
    from bench.suites import SUITES
    from bench.tasks import TASKS
    from methods import METHODS

    print("methods: " + ", ".join(METHODS.names()))
    print("tasks:   " + ", ".join(TASKS.names()))
    print("         and mteb tasks: mteb:NAME (registered with mteb) or mteb:PATH.py:CLASS (a task class in a file)")
    for name, make in SUITES.items():
        print(f"suite {name}: {make().description}")
    for name, entry in PUBLIC_MODELS.items():
        print(f"model {name}: {entry.summary()}")
    return 0


def cmd_data(args) -> int:
    from bench.data import resolve_data_dir
    from bench.data.fetch import fetch

    for path in fetch(args.names, resolve_data_dir(args.data_dir)):
        print(path)
    return 0


def cmd_reproduce(args) -> int:
    from bench.data import resolve_data_dir
    from bench.drift import format_report
    from bench.reproduce import format_written, reference_specs, reproduce, write_reference

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
    handler = {"run": cmd_run, "status": cmd_status, "report": cmd_report, "card": cmd_card, "export": cmd_export,
               "ls": cmd_ls, "data": cmd_data, "reproduce": cmd_reproduce}[args.command]
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
