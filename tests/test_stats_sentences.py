"""Statistics that respect how the data depends: the sentence-level bootstrap for STS sets whose pairs share
sentences (against scipy on explicitly repeated pairs, and a coverage simulation), the few-seed correction of the
two-level bootstrap, 10,000 resamples, and what stays out of the Benjamini-Hochberg families (the reference's own
checkpoint, undefined statistics, examples that are not the same ones)."""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from bench.report import significance
from bench.report.notes import significance_note
from bench.results import load_results, make_row, run_fields, write_run
from bench.spec import RunSpec
from bench.stats import (
    N_BOOT,
    PAIRED_BOOTSTRAP,
    PAIRS,
    SENTENCES,
    Resampling,
    bootstrap_ci,
    bootstrap_distribution,
    pair_resampling,
    paired_test,
    spearman_statistic,
    two_level_distribution,
)


def cell_statistics(results_dir, **options):
    """The folder's cell statistics, as `bench report` computes them: from the frame it loaded."""
    return significance.cell_statistics(load_results(results_dir, examples=True), **options)

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bootstrap_coverage", REPO / "benchmarks" / "bootstrap_coverage.py")
bootstrap_coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bootstrap_coverage)


def shared_sentences(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n pairs over m sentences (heavily shared), gold with ties, similarities with a few exact ties."""
    rng = np.random.default_rng(seed)
    left, right = rng.integers(0, m, n), rng.integers(0, m, n)
    gold = np.round(rng.uniform(0, 5, n) * 5) / 5
    sim = gold / 5 + rng.normal(0, 0.2, n)
    sim[:3] = sim[3]
    return sim, gold, left, right


def test_sentence_resamples_equal_scipy_spearman_on_explicitly_repeated_pairs():
    # oracle: scipy.stats.spearmanr on the pairs repeated (count of left sentence) x (count of right sentence)
    # times, the sentences drawn as scipy.stats.bootstrap draws indices (default_rng(seed).integers(0, m, (B, m)))
    n, m, n_boot = 120, 30, 40
    sim, gold, left, right = shared_sentences(n, m, 0)
    resampling = pair_resampling(left, right, n)
    assert resampling.kind == SENTENCES
    ours = bootstrap_distribution(sim, spearman_statistic(gold), n_boot, seed=5, resampling=resampling)
    index = np.unique(np.r_[left, right], return_inverse=True)[1]  # the sentences in use, numbered 0..m'-1
    drawn = np.random.default_rng(5).integers(0, index.max() + 1, (n_boot, index.max() + 1))
    for b in range(n_boot):
        counts = np.bincount(drawn[b], minlength=index.max() + 1)
        weight = counts[index[:n]] * counts[index[n:]]
        expected = 100 * sps.spearmanr(np.repeat(sim, weight), np.repeat(gold, weight)).statistic
        assert ours[b] == pytest.approx(expected, abs=1e-9)


def test_the_sentence_bootstrap_is_used_only_where_pairs_share_sentences():
    assert pair_resampling(np.arange(5), np.arange(5, 10), 5).kind == PAIRS  # every sentence in one pair
    assert pair_resampling(np.array([0, 1, 2]), np.array([3, 4, 0]), 3).kind == SENTENCES
    old = pair_resampling(None, None, 5)
    assert old.kind == PAIRS and old.label() == "pairs (no sentence identities stored: a run from before they were)"


def test_pair_bootstrap_under_covers_on_reused_sentences_and_the_sentence_bootstrap_does_not():
    """The simulation of benchmarks/bootstrap_coverage.py (200 datasets of 200 pairs over 40 sentences, fixed
    seeds): measured 51% for the pair bootstrap and 93.5% for the sentence bootstrap; the bounds leave about 2
    binomial standard errors (1.5 points at 95% over 200 datasets) to the sentence bootstrap's figure."""
    coverage = bootstrap_coverage.coverage(datasets=200, resamples=500)
    assert coverage[PAIRS] < 0.75
    assert 0.9 <= coverage[SENTENCES] <= 0.99


def test_the_seed_level_spread_is_rescaled_to_the_unbiased_variance():
    # oracle: numpy's unbiased variance (ddof=1) over S: what a mean of S seeds varies by. Without the
    # sqrt(S / (S - 1)) rescaling the bootstrap shows (S - 1) / S of it: 2/3 at 3 seeds, 1/2 at 2
    for values in (np.array([0.0, 1.0, 5.0]), np.array([2.0, 4.0])):
        per_seed = np.repeat(values[:, None], 40_000, axis=1)  # no example-level spread: only the seeds vary
        spread = two_level_distribution(per_seed, seed=1).var()
        assert spread == pytest.approx(values.var(ddof=1) / len(values), rel=0.03)


def test_every_test_and_interval_uses_10000_resamples():
    sim, gold, *_ = shared_sentences(60, 20, 1)
    assert N_BOOT == 10_000
    assert paired_test(sim, sim + np.linspace(0, 1, 60), gold).resamples == 10_000
    assert len(bootstrap_distribution(sim, spearman_statistic(gold))) == 10_000
    for tables_use in (significance.cell_statistics, significance_note):  # what `bench report` computes and prints
        assert inspect.signature(tables_use).parameters["n_boot"].default == 10_000


# ---- over a results directory ----

def fake_run(results_dir, method: str, task: str, values: np.ndarray, seed: int = 0, **stored):
    """A run with one cell (2, 64) fp32 of hand-made per-example values, written through bench.results."""
    spec = RunSpec(method=method, task=task, backbone="tiny-random-bert", seed=seed)
    shared = run_fields(spec, "test")
    sts = "gold" in stored
    if sts:
        metric, name = "spearman", "similarity"
        with warnings.catch_warnings():  # constant similarities: scipy warns, and the score is NaN as a run's is
            warnings.simplefilter("ignore", sps.ConstantInputWarning)
            score = 100 * sps.spearmanr(values.astype(np.float32), stored["gold"].astype(np.float32)).statistic
    else:
        metric = name = "ndcg@10"
        score = values.astype(np.float32).mean()
    rows = [make_row(shared, metric=metric, score=score, layer=2, dim=64, n_examples=len(values))]
    write_run(results_dir, spec, "test", rows, {f"2/64/fp32/{name}": values, **stored})


def test_cell_statistics_resample_sentences_where_stored_and_say_what_they_drew(tmp_path):
    sim, gold, left, right = shared_sentences(150, 40, 2)
    ids = dict(gold=gold, left_sentence=left, right_sentence=right)
    fake_run(tmp_path / "new", "full", "stsb", sim, **ids)
    fake_run(tmp_path / "new", "mrl", "stsb", sim + np.random.default_rng(0).normal(0, 0.1, 150), **ids)
    table = cell_statistics(tmp_path / "new", n_boot=300).set_index("method")
    f32 = lambda x: np.asarray(x, np.float32).astype(float)  # noqa: E731  (per-example files store float32)
    expected = bootstrap_ci(f32(sim), spearman_statistic(f32(gold)), 300, resampling=pair_resampling(left, right, 150))
    assert (table.loc["full", "ci_low"], table.loc["full", "ci_high"]) == pytest.approx(expected)
    assert table.loc["mrl", "test"] == PAIRED_BOOTSTRAP and table.loc["mrl", "resampled"] == SENTENCES
    assert ("STS resamples draw the sentences of stsb (their pairs share them; a pair counted as often as the product "
            "of its two sentences' counts)") in significance_note(table.reset_index(), n_boot=300)

    # a run from before identities were stored: pairs, and the note says why
    fake_run(tmp_path / "old", "full", "stsb", sim, gold=gold)
    fake_run(tmp_path / "old", "mrl", "stsb", sim + 0.5 * np.sin(np.arange(150)), gold=gold)
    old = cell_statistics(tmp_path / "old", n_boot=300)
    assert old.set_index("method").loc["mrl", "test"] == PAIRED_BOOTSTRAP
    assert ("STS resamples draw the pairs of stsb (no sentence identities stored: a run from before they were)"
            in significance_note(old, n_boot=300))


def test_the_reference_checkpoint_and_undefined_statistics_stay_out_of_the_families(tmp_path):
    sim, gold, left, right = shared_sentences(80, 30, 3)
    ids = dict(gold=gold, left_sentence=left, right_sentence=right)
    fake_run(tmp_path, "separate", "stsb", sim, **ids)
    fake_run(tmp_path, "full", "stsb", sim.copy(), **ids)  # the same model: full at full size is separate's
    fake_run(tmp_path, "mrl", "stsb", np.full(80, 0.5), **ids)  # constant similarities: Spearman undefined
    fake_run(tmp_path, "2dmse", "stsb", sim + np.random.default_rng(1).normal(0, 0.3, 80), **ids)
    table = cell_statistics(tmp_path, n_boot=200).set_index("method")
    assert table.loc["full", "reason"] == ("the same checkpoint as the reference separate (identical per-example "
                                           "values on every seed): nothing to test")
    assert table.loc["mrl", "reason"].startswith("its statistic or the reference's is undefined (NaN")
    assert table.loc[["full", "mrl"], "p_value"].isna().all() and (table.loc[["full", "mrl"], "n_tests"] == 0).all()
    assert table.loc["2dmse", "n_tests"] == 1 and table.loc["2dmse", "test"] == PAIRED_BOOTSTRAP
    note = significance_note(table.reset_index(), n_boot=200)
    assert "over the 1 tests" in note and "the same checkpoint as the reference separate" in note


def test_pairing_checks_the_stored_query_ids_and_sentence_identities(tmp_path):
    rng = np.random.default_rng(4)
    queries = np.array([f"q{i}" for i in range(30)])
    fake_run(tmp_path, "full", "scifact", rng.uniform(0, 100, 30), query_ids=queries)
    fake_run(tmp_path, "mrl", "scifact", rng.uniform(0, 100, 30), query_ids=queries[::-1])  # same count, reordered
    fake_run(tmp_path, "2dmse", "scifact", rng.uniform(0, 100, 30), query_ids=queries)
    sim, gold, left, right = shared_sentences(60, 25, 5)
    fake_run(tmp_path, "full", "stsb", sim, gold=gold, left_sentence=left, right_sentence=right)
    fake_run(tmp_path, "mrl", "stsb", sim + 0.1, gold=gold, left_sentence=right, right_sentence=left)
    table = cell_statistics(tmp_path, n_boot=100, n_perm=100).set_index(["method", "task"])
    different = "mrl and the reference full scored different examples of {} (30 vs 30)"
    assert table.loc[("mrl", "scifact"), "reason"].startswith(different.format("scifact"))
    assert table.loc[("mrl", "stsb"), "reason"].startswith(different.format("stsb").replace("30", "60"))
    assert table.loc[("2dmse", "scifact"), "reason"] == "" and table.loc[("2dmse", "scifact"), "p_value"] > 0
    assert "queries paired by position" not in significance_note(table.reset_index(), n_perm=100)

    # runs from before query ids were stored: paired by position (the count checked), and the note says so
    fake_run(tmp_path / "old", "full", "scifact", rng.uniform(0, 100, 30))
    fake_run(tmp_path / "old", "mrl", "scifact", rng.uniform(0, 100, 30))
    old = cell_statistics(tmp_path / "old", n_perm=100)
    assert old["test"].tolist() == ["", "paired sign-flip permutation test"]
    assert "queries paired by position for scifact: no query ids stored" in significance_note(old, n_perm=100)
