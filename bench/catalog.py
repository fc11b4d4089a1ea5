"""What tasks and methods are called and how they are judged: one frozen metadata record per task (in the spirit
of mteb's TaskMetadata), the method display order, method labels and the reference-method rule.

Torch-free and faiss-free: tasks, `bench data fetch`, suites, statistics and reports all read it. A task's record is
also written into every result row (the `task_meta` column), so reports and statistics judge a task by what its
rows say, also for tasks that live outside this file (mteb tasks, a user's BEIR folder).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pandas as pd

from bench import BenchError
from bench.precisions import supported
from bench.spec import stable_hash

STS_PRECISIONS = supported("sts")  # STS has no search, so no binary+rescore
RETRIEVAL_PRECISIONS = supported("retrieval")


@dataclass(frozen=True)
class TaskMeta:
    """One task: how it is named, scored and fetched. `family` groups tasks for averages and tables (sts,
    retrieval, or an mteb task type); `main_metric` is the row metric tables, heatmaps and tests use.

    mteb tasks (bench/tasks/mteb.py) fill it from mteb's TaskMetadata: display = its name, family = its type,
    main_metric = its main score, source and revision = its dataset's, plus the mteb version that scored them."""

    name: str
    display: str
    family: str
    main_metric: str
    split: str = "test"
    source: str = ""  # the hub dataset the data comes from (`bench data fetch` reads ours; "" where none)
    revision: str | None = None  # pinned where MTEB pins it, so fetched data is the data MTEB scores
    precisions: tuple[str, ...] = STS_PRECISIONS
    description: str = ""
    mteb_version: str = ""  # the mteb whose evaluators scored the task ("" for our own tasks)
    no_intervals: str = ""  # why the task stores no per-example values (so no intervals, no paired tests), or ""
    # Retrieval: a query's own document (the same id) is dropped from its ranking, where the queries are documents of
    # the corpus too (ArguAna's counter-arguments, Quora's questions): mteb's `ignore_identical_ids`, set where mteb
    # sets it for the same dataset
    ignore_identical_ids: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TaskMeta":
        try:
            fields = json.loads(text)
            fields["precisions"] = tuple(fields["precisions"])
            return cls(**fields)
        except (ValueError, TypeError, KeyError) as exc:
            raise BenchError(f"corrupt task_meta in a results file ({exc}); delete that run's files and rerun it") \
                from None


def _sts(name: str, display: str, source: str, revision: str, description: str) -> TaskMeta:
    return TaskMeta(name, display, "sts", "spearman", source=source, revision=revision, description=description)


def _beir(name: str, display: str, source: str = "", revision: str | None = None, split: str = "test",
          ignore_identical_ids: bool = False) -> TaskMeta:
    return TaskMeta(name, display, "retrieval", "ndcg@10", split=split, source=source, revision=revision,
                    precisions=RETRIEVAL_PRECISIONS, description=f"BEIR {display}",
                    ignore_identical_ids=ignore_identical_ids)


_STS_YEARS = {12: "a0d554a64d88156834ff5ae9920b964011b16384", 13: "7e90230a92c190f1bf69ae9002b8cea547a64cca",
              14: "6031580fec1f6af667f0bd2da0a551cf4f0b2375", 15: "ae752c7c21bf194d8b67fd573edf7ae58183cbe3",
              16: "4d8694f8f0e0100860b497b999b3dbed754a0513"}
_TASKS = [
    _sts("stsb", "STS-B", "mteb/stsbenchmark-sts", "b0fddb56ed78048fa8b90373c8a3cfc37b684831", "STS Benchmark test"),
    _sts("sickr", "SICK-R", "mteb/sickr-sts", "20a6d6f312dd54037fe07a32d58e5e168867909d",
         "all 9,927 SemEval-2014 SICK pairs, as MTEB"),
    *[_sts(f"sts{y}", f"STS{y}", f"mteb/sts{y}-sts", rev, f"SemEval STS 20{y}, sub-datasets together")
      for y, rev in _STS_YEARS.items()],
    # BEIR sets with MTEB's hub copy and the revision MTEB pins. cqadupstack is 12 sub-forum sets on the hub, not one:
    # runnable from a local folder, not fetchable under that name.
    _beir("scifact", "SciFact", "mteb/scifact", "d56462d0e63a25450459c4f213e49ffdb866f7f9"),
    _beir("nfcorpus", "NFCorpus", "mteb/nfcorpus", "ec0fa4fe99da2ff19ca1214b7966684033a58814"),
    _beir("arguana", "ArguAna", "mteb/arguana", "c22ab2a51041ffd869aaddef7af8d8215647e41a", ignore_identical_ids=True),
    _beir("fiqa", "FiQA-2018", "mteb/fiqa", "27a168819829fe9bcd655c2df245fb19452e8e06", ignore_identical_ids=True),
    _beir("scidocs", "SCIDOCS", "mteb/scidocs", "f8c2fcf00f625baaa80f62ec5bd9e1fff3b8ae88"),
    _beir("trec-covid", "TREC-COVID", "mteb/trec-covid", "bb9466bac8153a0349341eb1b22e06409e78ef4e"),
    _beir("quora", "Quora", "mteb/quora", "e4e08e0b7dbe3c8700f0daef558ff32256715259", ignore_identical_ids=True),
    _beir("nq", "NQ", "mteb/nq", "b774495ed302d8c44a3a7ea25c90dbce03968f31"),
    _beir("hotpotqa", "HotpotQA", "mteb/hotpotqa", "ab518f4d6fcca38d87c25209f94beba119d02014"),
    _beir("climate-fever", "Climate-FEVER", "mteb/climate-fever", "47f2ac6acb640fc46020b02a5b59fdda04d39380"),
    _beir("dbpedia-entity", "DBPedia", "mteb/dbpedia", "c0f706b76e590d620bd6618b3ca8efdd34e2d659"),
    _beir("fever", "FEVER", "mteb/fever", "bea83ef9e8fb933d90a2f1d5515737465d613e12", ignore_identical_ids=True),
    _beir("msmarco", "MS MARCO", "mteb/msmarco", "c5a29a104738b98a9e76336939199e264163d4a0", split="dev",
          ignore_identical_ids=True),
    _beir("touche2020", "Touche2020", "mteb/touche2020", "a34f9a33db75fa0cbb21bb5cfc3dae8dc8bec93f"),
    _beir("cqadupstack", "CQADupStack"),
]
TASK_META: dict[str, TaskMeta] = {t.name: t for t in _TASKS}
STS_ORDER = ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr")  # the Starbucks paper's column order
FAMILY_NAMES = {"sts": "STS", "retrieval": "Retrieval"}  # our own families; any other is an mteb task type
METRIC_NAMES = {"spearman": "Spearman x100", "ndcg@10": "nDCG@10"}


def local_beir_meta(name: str) -> TaskMeta:
    """Any BEIR-layout folder of the data dir, by its folder name: scored like the BEIR sets, not fetchable."""
    return _beir(name, name)


# ---- methods -----------------------------------------------------------------------------------------------------

# A display preference only: methods not listed follow in alphabetical order.
METHOD_ORDER = ("pretrained", "full", "separate", "mrl", "2dmse", "ese", "starbucks-srl", "starbucks", "qat")
METHOD_ORDER += ("pca", "matryoshka-adaptor", "bebr")  # post-hoc heads on the frozen backbone
# The method every other one is tested against, per backbone: the first of these present.
REFERENCE_PREFERENCE = ("separate", "full", "pretrained")


def method_order(methods) -> list[str]:
    """Preferred methods first; labels like `mrl@1a2b3c` sort with their base method."""
    def key(m: str):
        base = m.split("@")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), base, m)
    return sorted(set(methods), key=key)


def pick_reference(methods, reference: str | None = None) -> str | None:
    """The given reference method (it must be present), else the first of REFERENCE_PREFERENCE present; None: no
    reference, so no paired tests or difference views."""
    methods = sorted(set(methods))
    if reference is not None and reference not in methods:
        raise BenchError(f"reference method {reference!r} has no results; choose one of {', '.join(methods)}")
    return reference or next((name for name in REFERENCE_PREFERENCE if name in methods), None)


def method_labels(q: pd.DataFrame) -> pd.Series:
    """The method name, plus a config hash only where two configs of one method claim the same cell and seed of
    one backbone (runs on different backbones are told apart by the backbone column, not the label).

    `separate` has a different config per checkpoint but each owns different cells, so it stays one method;
    two hyperparameter (or evaluation) settings of `mrl` would otherwise be averaged as if they were seeds.
    """
    # a bf16 run is a config of its own; fp32 adds nothing, so the labels of before stay as they were
    dtype = q["dtype"].where(q["dtype"] != "fp32", "") if "dtype" in q else ""
    config = (q["train_data"] + "|" + q["budget"] + "|" + q["params"] + "|" + q["eval"] + dtype).map(
        lambda s: stable_hash(s)[:6])
    cell = ["backbone", "method", "seed", "layer", "dim", "precision", "task"]
    per_cell = q.assign(config=config).groupby(cell)["config"]
    counts = per_cell.nunique()
    clashing = counts[counts > 1].index.get_level_values("method").unique()
    return q["method"].where(~q["method"].isin(clashing), q["method"] + "@" + config)


# ---- main metrics of result rows -----------------------------------------------------------------------------------

RECORD_COLUMNS = ("family", "display", "no_intervals")  # what main_rows adds from each row's task record


def main_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The evaluated cells' main-metric rows (test split, layer and dim set), with RECORD_COLUMNS from each row's
    task record: what every table, figure and test is drawn from."""
    q = frame[(frame["layer"] >= 1) & (frame["dim"] >= 1) & (frame["split"] != "train")]
    if q.empty:
        return q.assign(**{c: pd.Series(dtype=str) for c in RECORD_COLUMNS})
    metas = {text: TaskMeta.from_json(text) for text in q["task_meta"].unique()}
    main = q["task_meta"].map({t: m.main_metric for t, m in metas.items()})
    q = q[q["metric"] == main]
    return q.assign(**{c: q["task_meta"].map({t: getattr(m, c) for t, m in metas.items()}) for c in RECORD_COLUMNS})


def is_native_family(family: str) -> bool:
    """Our own families (sts, retrieval) share the paper-style table; each mteb task type gets its own."""
    return family in FAMILY_NAMES
