"""`bench card`: retention arithmetic, its paired intervals, the within-1%/5% picks, the serving manifest, byte
identity and bad input, on synthetic results (tmp dirs only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

from bench.cli import main
from bench.report import card
from test_report import DIMS, LAYERS, encode_ms, fake_score, write_method  # synthetic-results writers

FULL = (max(LAYERS), max(DIMS))


@pytest.fixture(scope="module")
def mrl_card(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    write_method(results, "mrl", tasks=("stsb", "scifact"), precisions=("fp32", "int8"), examples=True, timed=True)
    write_method(results, "full", tasks=("stsb",), precisions=("fp32",))  # another method: not on mrl's card
    out = tmp_path_factory.mktemp("cards")
    paths = card.write_card(results, "minilm", out, method="mrl")
    return results, out, json.loads(paths[1].read_text())


def _cell(doc: dict, task: str, layer: int, dim: int, precision: str) -> dict:
    (task_doc,) = [t for t in doc["tasks"] if t["task"] == task]
    (cell,) = [c for c in task_doc["cells"] if (c["layer"], c["dim"], c["precision"]) == (layer, dim, precision)]
    return cell


def test_retention_is_the_cell_score_over_the_full_fp32_cell(tmp_path):
    # oracle: the scores the rows were written with (fake_score), divided by hand
    write_method(tmp_path, "mrl", tasks=("stsb", "scifact"), precisions=("fp32", "int8"), timed=True)
    doc = json.loads(card.write_card(tmp_path, "minilm", tmp_path / "out", method="mrl")[1].read_text())
    assert doc["full"] == {"layer": 3, "dim": 128, "precision": "fp32"}
    for task in ("stsb", "scifact"):
        full = fake_score("mrl", task, *FULL, "fp32", 0)
        for layer, dim, precision in [(1, 8, "fp32"), (2, 64, "int8"), (3, 128, "int8"), (3, 128, "fp32")]:
            expected = fake_score("mrl", task, layer, dim, precision, 0) / full
            assert _cell(doc, task, layer, dim, precision)["retention"] == pytest.approx(expected, abs=1e-6)
        assert _cell(doc, task, 2, 16, "int8")["encode_ms_per_1k_texts"] == encode_ms(2)
        assert _cell(doc, task, 2, 16, "int8")["bytes_per_vector"] == 16


def test_retention_interval_is_the_paired_bootstrap_of_the_ratio(mrl_card):
    # oracle: scipy.stats.bootstrap, paired, on the same resamples (bench.stats draws indices as scipy does)
    results, _, doc = mrl_card
    (npz,) = results.glob("mrl__scifact__*.examples.npz")
    values = np.load(npz)
    cell, full = values["2/16/int8/ndcg@10"].astype(float), values["3/128/fp32/ndcg@10"].astype(float)
    expected = sps.bootstrap((cell, full), lambda a, b, axis=-1: a.mean(axis) / b.mean(axis), paired=True,
                             n_resamples=card.N_BOOT, method="percentile", random_state=np.random.default_rng(0),
                             vectorized=True).confidence_interval
    got = _cell(doc, "scifact", 2, 16, "int8")
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((expected.low, expected.high), abs=1e-6)
    assert got["ci_low"] < got["retention"] < got["ci_high"] and got["interval_note"] == ""


def test_a_cell_without_per_example_values_says_why(tmp_path):
    write_method(tmp_path, "mrl", tasks=("stsb",), precisions=("fp32",))  # no examples written
    doc = json.loads(card.write_card(tmp_path, "minilm", tmp_path / "out", method="mrl")[1].read_text())
    cell = _cell(doc, "stsb", 1, 8, "fp32")
    assert cell["ci_low"] is None and "per-example" in cell["interval_note"]


def _frame(rows) -> pd.DataFrame:
    """A hand-built cells frame: (task, family, layer, dim, precision, bytes, retention)."""
    cells = pd.DataFrame(rows, columns=["task", "family", "layer", "dim", "precision", "bytes_per_vector",
                                        "retention"]).assign(rel_cost=lambda f: f["layer"] / 2, encode_ms=np.nan)
    cells.attrs["full"] = (2, 64)
    return cells


def test_smallest_within_takes_fewest_bytes_then_fewest_layers():
    cells = _frame([("t", "sts", 2, 64, "fp32", 256, 1.0), ("t", "sts", 2, 32, "fp32", 128, 0.995),
                    ("t", "sts", 1, 32, "fp32", 128, 0.991), ("t", "sts", 2, 32, "int8", 32, 0.97),
                    ("t", "sts", 2, 16, "binary", 2, 0.90)])
    assert card.smallest_within(cells, 0.99)[["layer", "dim", "precision"]].tolist() == [1, 32, "fp32"]
    assert card.smallest_within(cells, 0.95)[["layer", "dim", "precision"]].tolist() == [2, 32, "int8"]
    assert card.smallest_within(cells, 1.01) is None


def test_rescoring_cells_are_picked_by_the_bytes_they_count():
    """Every precision's bytes count what a query reads (binary+rescore-int8: bits + its int8 copy), so every cell
    can be picked: the cheapest by those bytes."""
    cells = _frame([("t", "sts", 2, 64, "fp32", 256, 1.0), ("t", "sts", 2, 64, "binary+rescore-int8", 72, 0.999),
                    ("t", "sts", 2, 64, "int8", 64, 0.995), ("t", "sts", 2, 64, "binary+rescore", 8, 0.98)])
    assert card.smallest_within(cells, 0.99)["precision"] == "int8"
    assert card.smallest_within(cells, 0.95)["precision"] == "binary+rescore"
    assert {c["precision"] for c in card.family_keeps(cells, 0.99)["cells"]} == {"fp32", "int8", "binary+rescore-int8"}


def test_the_report_picks_the_published_model_also_when_two_of_its_configs_share_a_folder(tmp_path):
    """Two configs of `pretrained` in one folder are labelled pretrained@<hash> by the tables; the report's card
    takes one of them instead of failing on the plain name (`bench run --dtype bf16` beside an fp32 run)."""
    for alpha in (1, 2):
        write_method(tmp_path, "pretrained", tasks=("stsb",), precisions=("fp32",), params={"alpha": alpha})
    from bench.report import build_report

    assert card.default_method(card._loaded(tmp_path), "minilm").startswith("pretrained@")
    build_report(tmp_path, tmp_path / "out")
    assert "(pretrained@" in (tmp_path / "out" / "cards" / "minilm.md").read_text()


def test_a_family_keeps_a_cell_only_where_every_task_keeps_it():
    cells = _frame([(t, "sts", layer, dim, "fp32", 4 * dim, r) for t, layer, dim, r in [
        ("a", 2, 64, 1.0), ("b", 2, 64, 1.0), ("a", 2, 32, 0.995), ("b", 2, 32, 0.96), ("a", 1, 64, 0.999),
        ("b", 1, 64, 0.992), ("a", 1, 32, 0.999)]])  # (1, 32) is missing on b: not kept
    keeps = card.family_keeps(cells, 0.99)
    assert keeps["cells"] == [{"layer": 1, "dim": 64, "precision": "fp32"}, {"layer": 2, "dim": 64, "precision": "fp32"}]
    assert keeps["dims"] == [64] and keeps["layers"] == [1, 2]
    assert card.family_keeps(cells, 0.95)["dims"] == [32, 64]


def test_card_json_manifest_and_markdown(mrl_card):
    _, out, doc = mrl_card
    assert set(doc["manifest"]["families"]) == {"sts", "retrieval"}
    assert "on every task of the family" in doc["manifest"]["definition"]
    sts = doc["manifest"]["families"]["sts"]
    # the manifest agrees with the card's own per-cell retentions (their arithmetic is tested above)
    kept = [d for d in DIMS if _cell(doc, "stsb", 3, d, "fp32")["retention"] >= 0.99]
    assert sts["tasks"] == ["stsb"] and sts["keeps_99"]["dims"] == kept != list(DIMS)
    assert doc["trained_for"] == [{"layer": 1, "dim": 16}, {"layer": 2, "dim": 64}, {"layer": 3, "dim": 128}]
    assert doc["prefix_truncation"]["note"] == card.NO_BASELINE
    markdown = (out / "minilm.md").read_text()
    assert markdown.count("![") == 1 and "(minilm.png)" in markdown and (out / "minilm.png").read_bytes()[:4] == \
        b"\x89PNG"
    assert "No non-prefix baseline in these results." in markdown


def test_card_is_byte_identical_and_never_imports_torch(mrl_card, tmp_path):
    results, out, _ = mrl_card
    again = card.write_card(results, "minilm", tmp_path, method="mrl")
    assert all(p.read_bytes() == (out / p.name).read_bytes() for p in again)
    code = "import sys, bench.report.card; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args, message", [
    (["--backbone", "nope"], "backbone 'nope' has no results in {dir}; backbones present: minilm"),
    (["--backbone", "minilm", "--method", "nope"], "method 'nope' has no results on backbone minilm; methods "
                                                   "present: full, mrl"),
])
def test_bad_input_is_one_line(mrl_card, tmp_path, capsys, args, message):
    results, _, _ = mrl_card
    assert main(["card", *args, "--results-dir", str(results), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message.format(dir=results)}\n"


def test_missing_or_empty_results_dir_is_one_line(tmp_path, capsys):
    assert main(["card", "--backbone", "minilm", "--results-dir", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["card", "--backbone", "minilm", "--results-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: no results in {tmp_path}; run `bench run` first or pass --results-dir\n"


def test_sts_retention_intervals_resample_sentences_where_pairs_share_them():
    # oracle: bench.stats' bootstrap distributions of both cells on the same sentence resamples, their ratio's
    # percentiles (tests/test_stats_sentences.py checks those resamples against scipy on repeated pairs)
    from bench import stats

    rng = np.random.default_rng(0)
    n = 120
    left, right, gold = rng.integers(0, 30, n), rng.integers(0, 30, n), rng.uniform(0, 5, n)
    full, small = gold + rng.normal(0, 1, n), gold + rng.normal(0, 2, n)
    sentences = stats.pair_resampling(left, right, n)
    values = {("stsb", *FULL, "fp32"): (full[None], gold, sentences), ("stsb", 1, 8, "fp32"): (small[None], gold,
                                                                                                 sentences)}
    cells = pd.DataFrame({"task": ["stsb", "stsb"], "layer": [1, FULL[0]], "dim": [8, FULL[1]],
                          "precision": ["fp32", "fp32"]})
    cells.attrs["full"] = FULL
    got = card.add_intervals(cells, values).iloc[0]
    statistic = stats.spearman_statistic(gold)
    ratio = (stats.bootstrap_distribution(small, statistic, card.N_BOOT, 0, sentences)
             / stats.bootstrap_distribution(full, statistic, card.N_BOOT, 0, sentences))
    assert (got.ci_low, got.ci_high) == pytest.approx(stats.percentile_ci(ratio, 0.05), abs=1e-12)
    pairs = (stats.bootstrap_distribution(small, statistic, card.N_BOOT, 0)
             / stats.bootstrap_distribution(full, statistic, card.N_BOOT, 0))
    assert got.ci_high - got.ci_low > np.subtract(*stats.percentile_ci(pairs, 0.05)[::-1])
