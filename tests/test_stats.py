"""bench.stats against scipy: the same resamples through scipy.stats.rankdata / spearmanr / bootstrap /
permutation_test must give the same ranks, correlations, intervals and p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import BenchError
from bench.report import significance
from bench.report.notes import significance_marks, significance_note
from bench.results import load_results, make_row, run_fields, write_run
from bench.spec import EvalSpec, RunSpec
from bench.stats import (
    PAIRED_BOOTSTRAP,
    SIGN_FLIP,
    TWO_LEVEL,
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_distribution,
    mean_statistic,
    paired_bootstrap,
    paired_sign_flip,
    paired_test,
    percentile_ci,
    point_estimate,
    resample_counts,
    spearman_statistic,
    two_level_distribution,
    two_level_test,
    weighted_ranks,
)


def cell_statistics(results_dir, **options):
    """The folder's cell statistics, as `bench report` computes them: from the frame it loaded."""
    return significance.cell_statistics(load_results(results_dir, examples=True), **options)


def sts_like(n: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gold scores with many ties (like STS 0..5 in steps of 0.2) and similarities with a few duplicated values."""
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, n) * 5) / 5
    sim = gold / 5 + rng.normal(0, noise / 5, n)
    sim[:4] = sim[4]  # exact ties among similarities too
    return sim, gold


def scipy_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The indices scipy.stats.bootstrap draws (checked by test_bootstrap_ci_of_mean_equals_scipy)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def test_weighted_ranks_equal_rankdata_of_each_resample():
    # oracle: scipy.stats.rankdata (average ties) on the explicitly resampled array
    sim, gold = sts_like(60, 0)
    idx = scipy_indices(60, 20, 3)
    (counts,) = resample_counts(60, 20, 3)
    for x in (sim, gold):
        ranks, ties = weighted_ranks(x, counts)
        for b in range(20):
            expected = sps.rankdata(x[idx[b]])
            np.testing.assert_allclose(ranks[b, idx[b]], expected, rtol=0, atol=1e-12)
            _, t = np.unique(x[idx[b]], return_counts=True)
            assert ties[b] == (t ** 3 - t).sum()


def test_spearman_statistic_equals_scipy_spearmanr_on_the_same_resamples():
    sim, gold = sts_like(300, 1)
    idx = scipy_indices(300, 50, 7)
    (counts,) = resample_counts(300, 50, 7)
    ours = spearman_statistic(gold)(sim, counts)
    theirs = [100 * sps.spearmanr(sim[i], gold[i]).statistic for i in idx]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert point_estimate(sim, spearman_statistic(gold)) == pytest.approx(100 * sps.spearmanr(sim, gold).statistic,
                                                                          abs=1e-10)


@pytest.mark.parametrize("n", [50, 5000])  # 5000: the resamples are drawn in several chunks
def test_bootstrap_ci_of_mean_equals_scipy(n):
    x = np.random.default_rng(2).exponential(size=n)
    ref = sps.bootstrap((x,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(0))
    low, high = bootstrap_ci(x, mean_statistic, n_boot=1000, seed=0)
    assert (low, high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)


def test_bootstrap_ci_of_spearman_equals_scipy_paired_bootstrap():
    sim, gold = sts_like(200, 4)
    ref = sps.bootstrap((sim, gold), lambda s, g: 100 * sps.spearmanr(s, g).statistic, paired=True,
                        vectorized=False, n_resamples=500, method="percentile", rng=np.random.default_rng(5))
    ours = bootstrap_ci(sim, spearman_statistic(gold), n_boot=500, seed=5)
    assert ours == pytest.approx(tuple(ref.confidence_interval), abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.4, 1.0])
def test_sign_flip_matches_scipy_exact_permutation_test(shift):
    # n = 12: scipy enumerates all 4096 sign patterns (exact p); ours is Monte Carlo with 20000 flips
    rng = np.random.default_rng(int(shift * 10))
    a = rng.normal(size=12)
    b = a - shift + rng.normal(size=12)
    exact = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                 n_resamples=10_000).pvalue
    ours = paired_sign_flip(a, b, n_perm=20_000, seed=0)
    assert ours.test == SIGN_FLIP
    assert ours.delta == pytest.approx(np.mean(a - b))
    assert abs(ours.p_value - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-3


def test_paired_bootstrap_equals_an_explicit_loop_over_resamples():
    # oracle: the same definition computed with scipy.stats.spearmanr on explicitly resampled pairs
    sim_a, gold = sts_like(150, 6, noise=1.0)
    sim_b = gold / 5 + np.random.default_rng(9).normal(0, 0.3, 150)
    result = paired_bootstrap(sim_a, sim_b, spearman_statistic(gold), n_boot=300, seed=1)
    rho = lambda s, i: 100 * sps.spearmanr(s[i], gold[i]).statistic  # noqa: E731
    delta = rho(sim_a, slice(None)) - rho(sim_b, slice(None))
    deltas = np.array([rho(sim_a, i) - rho(sim_b, i) for i in scipy_indices(150, 300, 1)])
    expected = (1 + np.sum(np.abs(deltas - delta) >= abs(delta))) / 301
    assert result.test == PAIRED_BOOTSTRAP
    assert result.delta == pytest.approx(delta, abs=1e-9)
    assert result.p_value == pytest.approx(expected)


def test_identical_methods_give_p_one_and_a_huge_shift_gives_the_smallest_p():
    sim, gold = sts_like(200, 8)
    assert paired_test(sim, sim.copy(), gold).p_value == 1.0
    assert paired_test(sim, sim.copy()).p_value == 1.0
    noise = np.random.default_rng(0).normal(size=200)
    assert paired_test(gold + 0.1 * noise, noise, gold, n_boot=1000).p_value == pytest.approx(1 / 1001)
    assert paired_test(sim + 50, sim, n_perm=1000).p_value == pytest.approx(1 / 1001)


def test_a_paired_test_refuses_different_examples():
    with pytest.raises(BenchError, match="same examples"):
        paired_test(np.ones(10), np.ones(11))


def _fake_run(results_dir, method, task, seed, cells, gold=None, max_pairs=None, backbone="tiny-random-bert"):
    """A run file with hand-made per-example values, written through bench.results like a real run."""
    spec = RunSpec(method=method, task=task, backbone=backbone, seed=seed, eval=EvalSpec(max_pairs=max_pairs))
    rows, examples = [], ({"gold": gold} if gold is not None else {})
    shared = run_fields(spec, "test")
    for (layer, dim), values in cells.items():
        if gold is not None:
            metric, name = "spearman", "similarity"
            score = 100 * sps.spearmanr(values.astype(np.float32), gold.astype(np.float32)).statistic
        else:
            metric = name = "ndcg@10"
            score = values.astype(np.float32).mean()
        examples[f"{layer}/{dim}/fp32/{name}"] = values
        rows.append(make_row(shared, metric=metric, score=score, layer=layer, dim=dim, n_examples=len(values)))
    write_run(results_dir, spec, "test", rows, examples)


def test_cell_statistics_over_a_results_directory(tmp_path):
    rng = np.random.default_rng(0)
    sim, gold = sts_like(120, 10)
    _fake_run(tmp_path, "pretrained", "stsb", 0, {(2, 32): sim, (2, 64): sim + 0.01}, gold)
    full_sims = {s: gold / 5 + rng.normal(0, 0.2, 120) for s in (0, 1)}
    for seed, s in full_sims.items():
        _fake_run(tmp_path, "full", "stsb", seed, {(2, 64): s}, gold)
    pre_q = rng.uniform(0, 60, 40)
    full_q = pre_q + 30  # better on every query: no sign flip reaches the observed difference
    _fake_run(tmp_path, "pretrained", "scifact", 0, {(2, 64): pre_q})
    _fake_run(tmp_path, "full", "scifact", 0, {(2, 64): full_q})

    table = cell_statistics(tmp_path, n_boot=400, n_perm=2000)
    assert set(table["reference"]) == {"full"}  # preference: separate, full, pretrained
    cell = table.set_index(["method", "task", "layer", "dim"])
    f32 = lambda x: np.asarray(x, np.float32).astype(float)  # noqa: E731  (per-example files store float32)

    sts = cell.loc[("pretrained", "stsb", 2, 64)]
    expected_ci = bootstrap_ci(f32(sim + 0.01), spearman_statistic(f32(gold)), 400, 0)
    assert (sts.ci_low, sts.ci_high) == pytest.approx(expected_ci)
    expected = paired_test(f32(sim + 0.01), np.vstack([f32(v) for v in full_sims.values()]), f32(gold), n_boot=400)
    assert (sts.delta, sts.p_value, sts.test) == (pytest.approx(expected.delta), pytest.approx(expected.p_value),
                                                  PAIRED_BOOTSTRAP)
    # the reference has 2 seeds: the two-level test sits beside the per-example one and decides the mark
    seeded = two_level_test(f32(sim + 0.01), np.vstack([f32(v) for v in full_sims.values()]),
                            spearman_statistic(f32(gold)), n_boot=400)
    assert (sts.seed_p_value, sts.seed_test) == (pytest.approx(seeded.p_value), TWO_LEVEL)
    assert np.isnan(sts.seed_ci_low)  # pretrained has one seed: its own interval is over examples only
    full = cell.loc[("full", "stsb", 2, 64)]
    assert full.n_seeds == 2 and np.isnan(full.p_value)  # the reference is not tested against itself
    assert full.seed_ci_low < full.score < full.seed_ci_high
    stored = [100 * sps.spearmanr(f32(v), f32(gold)).statistic for v in full_sims.values()]
    assert full.score == pytest.approx(np.mean(stored))  # mean over seeds, as the tables print
    assert np.isnan(cell.loc[("pretrained", "stsb", 2, 32)].p_value)  # no reference cell at (2, 32)

    ret = cell.loc[("pretrained", "scifact", 2, 64)]
    assert ret.test == SIGN_FLIP and ret.p_value == pytest.approx(1 / 2001) and ret.significant
    assert ret.score == pytest.approx(f32(pre_q).mean())

    # one family per backbone x precision here: the two tests, q by Benjamini-Hochberg over both
    tested = table[table["test"] != ""]
    assert len(tested) == 2 and (tested["n_tests"] == 2).all() and set(tested["family"]) == {"tiny-random-bert fp32"}
    q_sts, q_scifact = sps.false_discovery_control([seeded.p_value, 1 / 2001], method="bh")
    assert tested.set_index("task")["q_value"].to_dict() == {"stsb": pytest.approx(q_sts),
                                                             "scifact": pytest.approx(q_scifact)}
    assert (table["significant"] == (table["q_value"] < 0.05)).all()
    marks = significance_marks(table, "fp32")
    assert marks[("pretrained", 2, 64, "scifact")] == "*"
    assert all(table.set_index(["method", "layer", "dim", "task"]).loc[k, "significant"] for k in marks)
    note = significance_note(table, n_boot=400, n_perm=2000)
    assert TWO_LEVEL in note and SIGN_FLIP in note and "Benjamini-Hochberg q < 0.05 over the 2 tests" in note
    assert "full" in note and "1 cell: the reference full has no fp32 result at this layer and dim" in note
    assert table.equals(cell_statistics(tmp_path, n_boot=400, n_perm=2000))  # deterministic


def test_a_reference_scored_on_other_examples_gives_no_test_and_says_why(tmp_path):
    sim, gold = sts_like(50, 1)
    _fake_run(tmp_path, "pretrained", "stsb", 0, {(2, 64): sim}, gold)
    _fake_run(tmp_path, "full", "stsb", 0, {(2, 64): sim[:40]}, gold[:40])
    table = cell_statistics(tmp_path, n_boot=50).set_index("method")
    assert np.isnan(table.loc["pretrained", "p_value"]) and not table.loc["pretrained", "significant"]
    assert table.loc["pretrained", "reason"] == ("pretrained and the reference full scored different examples of "
                                                 "stsb (50 vs 40); rerun both with the same data and evaluation "
                                                 "settings")
    with pytest.raises(BenchError, match="reference method 'mrl' has no results"):
        cell_statistics(tmp_path, reference="mrl")


def test_a_reference_evaluated_with_other_settings_is_not_paired(tmp_path):
    # a results directory holding two suites (here: a 50-pair slice beside the full 60 pairs) is not an error
    sim, gold = sts_like(60, 3)
    _fake_run(tmp_path, "pretrained", "stsb", 0, {(2, 64): sim}, gold)
    _fake_run(tmp_path, "full", "stsb", 0, {(2, 64): sim[:50]}, gold[:50], max_pairs=50)
    table = cell_statistics(tmp_path, n_boot=50)
    assert table["p_value"].isna().all() and (table["n_examples"].tolist() == [50, 60])
    assert table["reason"].tolist() == ["", "the reference full was evaluated on stsb with other settings (eval)"]
    assert significance_note(table) == ("No significance marks: 1 cell: the reference full was evaluated on stsb "
                                        "with other settings (eval).")


def test_a_missing_per_example_file_is_named_and_the_other_cells_are_still_tested(tmp_path):
    sim, gold = sts_like(60, 5)
    _fake_run(tmp_path, "full", "stsb", 0, {(2, 64): sim, (2, 32): sim}, gold)
    _fake_run(tmp_path, "mrl", "stsb", 0, {(2, 64): sim + 0.1, (2, 32): sim - 0.1}, gold)
    _fake_run(tmp_path, "2dmse", "stsb", 0, {(2, 64): sim + 0.2}, gold)
    (missing,) = tmp_path.glob("2dmse__*.examples.npz")
    missing.unlink()
    table = cell_statistics(tmp_path, n_boot=50).set_index(["method", "dim"])
    assert table.loc[("mrl", 64), "test"] == PAIRED_BOOTSTRAP and table.loc[("mrl", 32), "test"] == PAIRED_BOOTSTRAP
    reason = table.loc[("2dmse", 64), "reason"]
    assert reason.startswith(f"per-example file {missing.name} missing") and np.isnan(table.loc[("2dmse", 64), "ci_low"])
    assert table.loc[("2dmse", 64), "score"] == pytest.approx(100 * sps.spearmanr(
        (sim + 0.2).astype(np.float32), gold.astype(np.float32)).statistic)  # the stored score is still shown
    assert f"No test for 1 cell: per-example file {missing.name} missing" in significance_note(table.reset_index())


def test_cells_of_another_backbone_are_never_paired(tmp_path):
    # same examples, same evaluation settings: only the backbone differs, and that alone forbids the pairing
    sim, gold = sts_like(60, 4)
    _fake_run(tmp_path, "full", "stsb", 0, {(2, 64): sim}, gold)
    _fake_run(tmp_path, "mrl", "stsb", 0, {(2, 64): sim + 0.1}, gold, backbone="minilm")
    table = cell_statistics(tmp_path, n_boot=50).set_index(["backbone", "method"])
    assert table.loc[("minilm", "mrl"), "reference"] == "" and np.isnan(table.loc[("minilm", "mrl"), "p_value"])
    assert table.loc[("tiny-random-bert", "full"), "reference"] == "full"


def test_without_a_reference_method_cells_get_intervals_but_no_tests(tmp_path):
    sim, gold = sts_like(50, 2)
    _fake_run(tmp_path, "mrl", "stsb", 0, {(2, 64): sim}, gold)
    _fake_run(tmp_path, "2dmse", "stsb", 0, {(2, 64): sim + 0.1}, gold)
    table = cell_statistics(tmp_path, n_boot=100)
    assert (table["reference"] == "").all() and table["p_value"].isna().all() and (table["test"] == "").all()
    assert (table["ci_low"] < table["score"]).all() and (table["score"] < table["ci_high"]).all()
    assert set(table["reason"]) == {"these runs have no reference method (one of separate, full, pretrained) on this "
                                    "backbone"}
    assert significance_note(table).startswith("No significance marks: 2 cells: these runs have no reference method")
    assert significance_marks(table, "fp32") == {}
    assert cell_statistics(tmp_path, reference="mrl", n_boot=100)["test"].tolist() == [PAIRED_BOOTSTRAP, ""]


def test_two_level_test_equals_an_explicit_loop_over_seeds_then_examples():
    """Oracle: the definition computed directly with scipy.stats.spearmanr: replicate b draws each side's seeds
    with replacement (default_rng([seed, 1]) for a, [seed, 2] for b), one resample of the pairs shared by every
    drawn seed of both sides (the indices scipy.stats.bootstrap draws), and averages the drawn seeds' Spearman,
    its deviation from the mean over all seeds scaled by sqrt(S / (S - 1)) (the few-seed correction)."""
    n, n_boot = 80, 200
    sim, gold = sts_like(n, 11)
    rng = np.random.default_rng(3)
    a = np.vstack([sim + rng.normal(0, 0.3 * (1 + s), n) for s in range(3)])  # 3 seeds of unequal quality
    b = np.vstack([sim + rng.normal(0, 0.5, n) for _ in range(2)])
    result = two_level_test(a, b, spearman_statistic(gold), n_boot=n_boot, seed=4)
    rho = lambda x, i: 100 * sps.spearmanr(x[i], gold[i]).statistic  # noqa: E731
    delta = np.mean([rho(x, slice(None)) for x in a]) - np.mean([rho(x, slice(None)) for x in b])
    seeds_a = np.random.default_rng([4, 1]).integers(0, 3, (n_boot, 3))
    seeds_b = np.random.default_rng([4, 2]).integers(0, 2, (n_boot, 2))
    def replicate(x, drawn, idx):
        every = np.mean([rho(v, idx) for v in x])
        return every + np.sqrt(len(x) / (len(x) - 1)) * (np.mean([rho(x[s], idx) for s in drawn]) - every)

    deltas = np.array([replicate(a, seeds_a[k], idx) - replicate(b, seeds_b[k], idx)
                       for k, idx in enumerate(scipy_indices(n, n_boot, 4))])
    expected = (1 + np.sum(np.abs(deltas - delta) >= abs(delta))) / (1 + n_boot)
    assert result.test == TWO_LEVEL and result.delta == pytest.approx(delta, abs=1e-9)
    assert result.p_value == pytest.approx(expected)


def test_seed_variance_widens_the_two_level_interval_and_weakens_the_test():
    # two seeds far apart (one good, one poor model), many examples: the examples alone look very sure, the seeds not
    n = 400
    sim, gold = sts_like(n, 12, noise=0.2)
    rng = np.random.default_rng(0)
    seeds = np.vstack([gold / 5 + rng.normal(0, 0.1, n), gold / 5 + rng.normal(0, 0.6, n)])
    reference = np.vstack([gold / 5 + rng.normal(0, 0.3, n)])
    statistic = spearman_statistic(gold)
    per_seed = np.vstack([bootstrap_distribution(v, statistic, 500, 0) for v in seeds])
    example_width = np.subtract(*percentile_ci(per_seed.mean(axis=0))[::-1])
    seed_width = np.subtract(*percentile_ci(two_level_distribution(per_seed))[::-1])
    assert seed_width > 3 * example_width
    assert paired_test(seeds, reference, gold, n_boot=500).p_value < 0.01  # seeds fixed: "different"
    assert two_level_test(seeds, reference, statistic, n_boot=500).p_value > 0.2  # seeds resampled: not so sure


def test_benjamini_hochberg_within_each_family():
    """Oracle: the step-up rule written out (q_(i) = min over j >= i of p_(j) m / j), and scipy's own."""
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    frame = pd.DataFrame({"backbone": "b", "precision": ["fp32"] * 6 + ["int8"] * 4, "p_value": p,
                          "seed_p_value": np.nan})
    frame.loc[9, ["p_value", "seed_p_value"]] = [0.9, 0.001]  # a seed-aware test decides where there is one
    out = benjamini_hochberg(frame, alpha=0.05)

    def step_up(ps):
        order = np.argsort(ps)
        ranked = ps[order] * len(ps) / np.arange(1, len(ps) + 1)
        q = np.minimum.accumulate(ranked[::-1])[::-1]
        return np.minimum(q, 1)[np.argsort(order)]

    fp32, int8 = p[:6], np.r_[p[6:9], 0.001]
    np.testing.assert_allclose(out["q_value"], np.r_[step_up(fp32), step_up(int8)], rtol=1e-12)
    np.testing.assert_allclose(out["q_value"][:6], sps.false_discovery_control(fp32), rtol=1e-12)
    assert out["n_tests"].tolist() == [6] * 6 + [4] * 4 and out["family"].tolist() == ["b fp32"] * 6 + ["b int8"] * 4
    assert out["significant"].tolist() == [True, True] + [False] * 7 + [True]  # p = 0.039 < 0.05 is not enough
    families = benjamini_hochberg(frame, pd.Series(["x"] * 10), alpha=0.05)
    np.testing.assert_allclose(families["q_value"], step_up(np.r_[p[:9], 0.001]), rtol=1e-12)
