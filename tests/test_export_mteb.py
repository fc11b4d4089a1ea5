"""`bench export mteb`: the results folder it writes is read back by mteb's own loaders (the oracle: mteb's
ResultCache and TaskResult), with every main score equal to ours, one experiment per (layer, dim, precision) cell."""

from __future__ import annotations

import re

import pytest
from mteb import ResultCache, TaskResult

from bench.cli import main
from bench.results import load_results
from test_report import write_method  # synthetic-results writers (tmp dirs only)

TASKS = {"stsb": "STSBenchmark", "sickr": "SICK-R", "scifact": "SciFact"}
PRECISIONS = ("fp32", "int8", "binary", "binary+rescore", "binary+rescore-int8", "binary+rescore-fp32")
EXPERIMENT = re.compile(r"embed_dim_(\d+)__layer_(\d+)__output_dtypes_(\w+?)(?:__rescore_(bits|int8|fp32))?$")
RESCORED = {"bits": "binary+rescore", "int8": "binary+rescore-int8", "fp32": "binary+rescore-fp32"}
DTYPES = {"float32": "fp32", "int8": "int8", "binary": "binary"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    results, out = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("mteb")
    write_method(results, "mrl", tasks=tuple(TASKS), precisions=PRECISIONS)
    assert main(["export", "mteb", "--results-dir", str(results), "--out", str(out)]) == 0
    return results, out


def _ours(results) -> dict[tuple, float]:
    """(mteb task, layer, dim, precision) -> our main score on mteb's 0..1 scale."""
    frame = load_results(results)
    main_metric = {"stsb": "spearman", "sickr": "spearman", "scifact": "ndcg@10"}
    rows = frame[(frame["layer"] > 0) & (frame["dim"] > 0) & (frame["metric"] == frame["task"].map(main_metric))]
    return {(TASKS[r.task], r.layer, r.dim, r.precision): r.score / 100 for r in rows.itertuples()}


def test_mteb_loads_every_cell_as_an_experiment_with_our_main_scores(exported):
    results, out = exported
    ours = _ours(results)
    loaded = ResultCache(out).load_results(include_remote=False, load_experiments="match_name")
    theirs = {}
    for model in loaded.model_results:
        assert model.model_name == "elastic-bench/minilm-mrl"
        if model.experiment_name is None:  # the full cell, also as the model's own result
            assert {t.task_name: t.get_score() for t in model.task_results} == pytest.approx(
                {task: ours[(task, 3, 128, "fp32")] for task in TASKS.values()}, abs=1e-6)
            continue
        dim, layer, dtype, rescore = EXPERIMENT.match(model.experiment_name).groups()
        precision = RESCORED[rescore] if rescore else DTYPES[dtype]
        for task in model.task_results:
            theirs[(task.task_name, int(layer), int(dim), precision)] = task.get_score()
    # STS has no binary+rescore: every cell of ours appears once, nothing else
    assert theirs.keys() == ours.keys()
    assert theirs == pytest.approx(ours, abs=1e-6)  # mteb rounds scores to 6 decimals on disk


def test_a_task_result_file_loads_alone_with_mteb_metric_names(exported):
    _, out = exported
    (path,) = out.glob("results/*/*/experiments/embed_dim_64__layer_2__output_dtypes_int8/STSBenchmark.json")
    result = TaskResult.from_disk(path)
    scores = result.scores["test"][0]
    assert scores["main_score"] == scores["cosine_spearman"] and 0 < scores["main_score"] < 1
    assert {"cosine_pearson", "hf_subset", "languages"} <= set(scores)
    (path,) = out.glob("results/*/*/experiments/embed_dim_64__layer_2__output_dtypes_int8/SciFact.json")
    assert TaskResult.from_disk(path).scores["test"][0]["main_score"] == \
        TaskResult.from_disk(path).scores["test"][0]["ndcg_at_10"]


def test_missing_results_dir_is_one_line(tmp_path, capsys):
    assert main(["export", "mteb", "--results-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
