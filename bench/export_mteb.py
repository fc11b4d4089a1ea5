"""`bench export mteb`: our results as an mteb results folder, which mteb's own loaders (ResultCache, TaskResult)
read back and mteb can submit.

Layout (mteb's ResultCache): `<out>/results/<org>__<model>/<revision>/experiments/<experiment>/<Task>.json`, one
experiment per (layer, dim, precision) cell, plus the full cell (deepest layer, widest dim, fp32) as the model's
plain result `<out>/results/<org>__<model>/<revision>/<Task>.json`. Each folder holds the model_meta.json mteb
identifies it by. A cell's experiment kwargs are mteb's own settings, `embed_dim` (the dims kept) and
`output_dtypes` (the stored format: float32, int8, binary), plus `layer` (transformer blocks run) and, for the
binary+rescore precisions, `rescore`: what the float query rescores against (bits, int8, fp32); mteb names the
folder from them (ModelMeta.experiment_name).

A model is one (backbone, method) of the results: `elastic-bench/<backbone>-<method>`, its revision a hash of the
method's configurations (params, training data, budget). Our tasks take their mteb names and their metrics mteb's
names on mteb's 0..1 scale; rows of mteb tasks (`mteb:...`) already hold mteb's names and scale.

Lives outside bench/report because mteb imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import mteb
import pandas as pd
from mteb import ResultCache, TaskResult
from mteb.models import ModelMeta
from mteb.types import OutputDType

from bench import BenchError
from bench.catalog import TaskMeta, method_labels
from bench.results import load_results
from bench.precisions import FULL
from bench.precisions import precision as precision_record
from bench.spec import stable_hash

MTEB_TASKS = {"stsb": "STSBenchmark", "sickr": "SICK-R", **{f"sts{y}": f"STS{y}" for y in range(12, 17)},
              "scifact": "SciFact", "nfcorpus": "NFCorpus", "arguana": "ArguAna", "fiqa": "FiQA2018",
              "scidocs": "SCIDOCS", "trec-covid": "TRECCOVID", "quora": "QuoraRetrieval", "nq": "NQ",
              "hotpotqa": "HotpotQA", "climate-fever": "ClimateFEVER", "dbpedia-entity": "DBPedia", "fever": "FEVER",
              "msmarco": "MSMARCO", "touche2020": "Touche2020"}
# our metric -> mteb's names for it (STS: the similarity our precision gives, which for fp32 is mteb's cosine)
MTEB_METRICS = {"spearman": ("cosine_spearman", "spearman"), "pearson": ("cosine_pearson", "pearson"),
                "ndcg@10": ("ndcg_at_10",), "mrr@10": ("mrr_at_10",), "recall@100": ("recall_at_100",)}
OUR_SCALE = 100.0  # our STS and retrieval scores are x100; mteb's are 0..1
COST_METRICS = {"relative_encode_cost", "index_bytes", "search_ms_per_query"}  # cell rows that are not scores


def export_mteb(results_dir: Path, out: Path) -> list[Path]:
    """Write every (backbone, method)'s cells under `out` in mteb's layout; return the task result files."""
    frame = load_results(results_dir)
    rows = _score_rows(frame)
    if rows.empty:
        raise BenchError(f"no evaluated cells in {results_dir}; run `bench run` first or pass --results-dir")
    cache = ResultCache(out)
    written = []
    for (backbone, label), model_rows in rows.groupby(["backbone", "label"], sort=True):
        name, revision = model_identity(backbone, label, model_rows)
        full = (model_rows["layer"].max(), model_rows["dim"].max(), FULL)
        for (layer, dim, precision), cell in model_rows.groupby(["layer", "dim", "precision"], sort=True):
            meta = cell_meta(name, revision, int(layer), int(dim), precision)
            metas = [meta, _plain(meta)] if (layer, dim, precision) == full else [meta]
            for task, task_rows in cell.groupby("mteb_task", sort=True):
                result = task_result(task, task_rows)
                for m in metas:
                    cache.save_to_cache(result, m)
                    written.append(cache.get_task_result_path(task, m))
    return written


def _score_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The evaluated cells' score rows (no cost rows), with the method label, the mteb task name and whether the
    row is ours (x100 scale, our metric names) or an mteb task's."""
    q = frame[(frame["layer"] >= 1) & (frame["dim"] >= 1) & (frame["split"] != "train")
              & ~frame["metric"].isin(COST_METRICS)]
    if q.empty:
        return q
    metas = {text: TaskMeta.from_json(text) for text in q["task_meta"].unique()}
    q = q.assign(label=method_labels(q), ours=q["task_meta"].map({t: not m.mteb_version for t, m in metas.items()}),
                 mteb_task=[MTEB_TASKS.get(t, metas[m].display) for t, m in zip(q["task"], q["task_meta"])],
                 main=q["task_meta"].map({t: m.main_metric for t, m in metas.items()}))
    missing = sorted(set(q.loc[q["ours"] & ~q["task"].isin(MTEB_TASKS), "task"]))
    if missing:
        raise BenchError(f"task(s) {', '.join(missing)} have no mteb counterpart to export to; export results "
                         f"without them (tasks mteb has: {', '.join(sorted(MTEB_TASKS))})")
    return q[~q["ours"] | q["metric"].isin(MTEB_METRICS)]


def model_identity(backbone: str, label: str, rows: pd.DataFrame) -> tuple[str, str]:
    """`elastic-bench/<backbone>-<label>` (path-safe) and a revision: a hash of the method's configurations."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{backbone}-{label}")
    configs = sorted(set(rows["params"] + "|" + rows["train_data"] + "|" + rows["budget"]))
    return f"elastic-bench/{name}", stable_hash(configs)[:12]


def cell_meta(name: str, revision: str, layer: int, dim: int, precision: str) -> ModelMeta:
    """The cell as an mteb experiment: embed_dim and output_dtypes as mteb sets them (ModelMeta.load_model, and
    the `precision` encode kwarg folded into output_dtypes), plus the layer."""
    record = precision_record(precision)  # an unknown name in the results is one error line
    dtype = record.form.mteb_dtype  # the stored format
    kwargs = {"embed_dim": dim, "output_dtypes": dtype, "layer": layer}
    if record.rescore:  # the float query rescores against: "bits" (the documents' own), "int8" or "fp32" copies
        kwargs["rescore"] = record.rescore.label
    return ModelMeta.create_empty({"name": name, "revision": revision, "embed_dim": dim,
                                   "output_dtypes": [OutputDType(dtype)],
                                   "experiment_kwargs": kwargs, "framework": ["PyTorch"]})


def _plain(meta: ModelMeta) -> ModelMeta:
    """The full cell as the model's own (experiment-free) result."""
    return meta.model_copy(update={"experiment_kwargs": None})


def task_result(task_name: str, rows: pd.DataFrame) -> TaskResult:
    """One cell's rows of one task -> mteb's TaskResult (scores mean over seeds; split as scored)."""
    try:
        task = mteb.get_task(task_name)
    except Exception as exc:  # mteb raises KeyError or ValueError, with a long suggestion list
        raise BenchError(f"mteb does not know task {task_name!r} (a task class of your own is not registered with "
                         "mteb); export results without it") from exc
    scores: dict[str, dict[str, float]] = {}
    for (split, metric), part in rows.groupby(["split", "metric"], sort=True):
        value = float(part["score"].mean())
        ours = bool(part["ours"].iloc[0])
        names = MTEB_METRICS[metric] if ours else (metric,)
        for n in names:
            scores.setdefault(split, {})[n] = value / OUR_SCALE if ours else value
        if metric == part["main"].iloc[0]:
            scores[split]["main_score"] = value / OUR_SCALE if ours else value
    # evaluation_time: the grid is scored from one encoding per task, so no cell has a time of its own
    return TaskResult.from_task_results(task, {s: {"default": v} for s, v in scores.items()}, evaluation_time=None)

