"""``Comparison``: statistics on constructed samples whose answer is known, checked
against scipy's bootstrap, then ``Batch.compare`` on real batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from _frames import make_record
from conftest import TEST_HANDLERS

from fnrun_nb import Pool
from fnrun_nb.batch.comparison import bootstrap_percentile, compare_frames

N = 100_000


def lognormal(seed: int, n: int = N, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(0.0, 0.3, n) * scale


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return make_record(lognormal(1), workers=4)


@pytest.mark.parametrize("q", [50.0, 99.0, 37.3])
def test_bootstrap_replicates_match_brute_force_resampling(q: float) -> None:
    # The order-statistic shortcut must give the distribution that resampling rows
    # gives: compare the two sets of replicates quantile by quantile.
    x = lognormal(3, n=301)
    fast = bootstrap_percentile(x, q, 20_000, np.random.default_rng(4))
    rows = np.random.default_rng(5).integers(0, x.size, (20_000, x.size))
    brute = np.percentile(x[rows], q, axis=1)
    probe = [5, 25, 50, 75, 95]
    spread = np.percentile(brute, 90) - np.percentile(brute, 10)
    assert np.allclose(np.percentile(fast, probe), np.percentile(brute, probe), atol=0.05 * spread)
    assert abs(fast.mean() - brute.mean()) < 0.02 * spread


def test_interval_agrees_with_scipy_bootstrap_percentile_method() -> None:
    # The well-kept implementation (resampling rows, percentile interval) on a sample
    # small enough for it; odd and even sizes, so the medians interpolate differently.
    stats = pytest.importorskip("scipy.stats")
    a, b = lognormal(21, n=151), lognormal(22, n=240, scale=1.3)
    resamples = 20_000

    def ratio_of(q: float) -> Callable[..., np.ndarray]:
        def statistic(b: np.ndarray, a: np.ndarray, axis: int) -> np.ndarray:
            ratio: np.ndarray = np.percentile(b, q, axis=axis) / np.percentile(a, q, axis=axis)
            return ratio

        return statistic

    c = compare_frames(make_record(a), make_record(b), resamples=resamples, seed=23)
    for q, ci in ((50, c.ci), (99, c.p99_ci)):
        ref = stats.bootstrap(
            (b, a), ratio_of(q), n_resamples=resamples, method="percentile",
            # random_state: the name scipy 1.10 (the floor) knows; newer scipy reads
            # it as rng, so both draw the same resamples from this generator.
            confidence_level=0.95, vectorized=True, random_state=np.random.default_rng(24),
        ).bootstrap_distribution
        # Each endpoint read on scipy's bootstrap distribution: the share of scipy's
        # replicates below it must be its tail, 2.5% / 97.5%, within 1 point.  The
        # replicates of a percentile are lumpy (a p99 of 240 rows takes few values),
        # so an endpoint on an atom matches if the atom spans the tail.  Monte Carlo
        # noise here is about 0.2 points; a 90% interval would be 2.5 points off.
        for x, tail in zip(ci, (0.025, 0.975)):
            below, upto = np.mean(ref < x), np.mean(ref <= x)
            assert below - 0.01 <= tail <= upto + 0.01, (q, x, tail, below, upto)
        if q == 50:
            # The whole distribution of the ratio, not only its tails: a two-sample
            # Kolmogorov-Smirnov distance below 0.02, its 0.1% critical value at
            # 20,000 against 20,000 (rounded: numpy and we interpolate with
            # different float operations, a last-bit difference on an atom).
            ks = stats.ks_2samp(np.round(c.replicates, 12), np.round(ref, 12))
            assert ks.statistic < 0.02, ks


def test_identical_distributions_ci_contains_one(base: pd.DataFrame) -> None:
    same = make_record(lognormal(2), workers=4)
    c = compare_frames(base, same)
    assert c.ci[0] <= 1.0 <= c.ci[1]
    assert c.direction == "same"
    assert c.verdict.startswith("no difference beyond 5%")


def test_one_percent_shift_on_100k_rows_is_no_difference_beyond_5_percent(
    base: pd.DataFrame,
) -> None:
    shifted = make_record(lognormal(2, scale=1.01), workers=4)
    c = compare_frames(base, shifted)
    # A rank test calls a 1% drift on 100k rows significant; the verdict must not.
    assert c.p_value < 0.05
    assert c.direction == "same"
    assert c.verdict.startswith("no difference beyond 5%")
    assert 1.0 < c.ratio < 1.02


def test_two_x_slower_detected_in_the_right_direction(base: pd.DataFrame) -> None:
    slower = make_record(lognormal(2, scale=2.0), workers=4)
    c = compare_frames(base, slower)
    assert c.direction == "slower"
    assert c.verdict.startswith("B is 2.0") and "x slower (95% CI " in c.verdict
    assert c.ci[0] > 1.9 and c.ci[1] < 2.1
    back = compare_frames(slower, base)
    assert back.direction == "faster"
    assert back.verdict.startswith("B is 2.0") and "x faster" in back.verdict


def test_threshold_and_confidence_are_printed_exactly(base: pd.DataFrame) -> None:
    # A 2.5% threshold is not "2%" or "3%": the verdict states the band it applied.
    c = compare_frames(base, make_record(lognormal(2), workers=4), threshold=0.025)
    assert c.direction == "same"
    assert c.verdict.startswith("no difference beyond 2.5% (B/A = ")
    assert "threshold 2.5%," in c._repr_html_()
    c = compare_frames(base, make_record(lognormal(2, scale=2.0), workers=4), confidence=0.975)
    assert "x slower (97.5% CI " in c.verdict
    assert "97.5% CI" in repr(c).splitlines()[4]  # the B/A row of the table
    small = compare_frames(
        make_record(lognormal(7, n=30)), make_record(lognormal(8, n=30, scale=1.08)),
        threshold=0.075,
    )
    assert small.verdict.startswith("inconclusive at 7.5% ("), small.verdict


def test_small_noisy_samples_are_inconclusive() -> None:
    a = make_record(lognormal(7, n=30))
    b = make_record(lognormal(8, n=30, scale=1.08))
    c = compare_frames(a, b)
    assert c.ci[0] < 1.05 < c.ci[1]
    assert c.direction == "inconclusive"
    assert c.verdict.startswith("inconclusive at 5%")


def test_seeded_and_deterministic(base: pd.DataFrame) -> None:
    other = make_record(lognormal(9, n=2000, scale=1.3))
    one, two = compare_frames(base, other, seed=11), compare_frames(base, other, seed=11)
    assert one.ci == two.ci and one.verdict == two.verdict
    assert compare_frames(base, other, seed=12).ci != one.ci


def test_verdict_reads_like_the_issue_example() -> None:
    a = make_record(lognormal(1, n=400))
    b = make_record(lognormal(2, n=400, scale=1.8))
    c = compare_frames(a, b)
    # "B is 1.8x slower (95% CI 1.6-2.0)": one decimal while it keeps the CI apart.
    assert c.verdict.startswith("B is 1.8x slower (95% CI 1.")


def test_per_input_diff_names_the_inputs_that_got_slower() -> None:
    service = np.full(400, 1.0)
    a = make_record(service, input_index=np.arange(400) % 100)
    slowed = service.copy()
    slowed[np.arange(400) % 100 == 42] = 5.0
    b = make_record(slowed, input_index=np.arange(400) % 100)
    table = compare_frames(a, b).per_input()
    assert table.index[0] == 42
    assert table.loc[42, "diff_ms"] == pytest.approx(4.0)
    assert table.loc[42, "ratio"] == pytest.approx(5.0)
    assert list(table.columns) == ["n_A", "A_p50_ms", "n_B", "B_p50_ms", "diff_ms", "ratio"]
    assert (table["n_A"] == 4).all() and len(table) == 100


def test_only_ok_rows_count() -> None:
    service = np.ones(10)
    service[0] = 1000.0  # a timed-out call: how long it took to fail
    a = make_record(service, outcomes=["timeout"] + ["ok"] * 9)
    c = compare_frames(a, make_record(np.ones(9)))
    assert c.n == (9, 9) and c.medians == (1.0, 1.0)


def test_reprs_carry_the_verdict_and_both_sides(base: pd.DataFrame) -> None:
    c = compare_frames(base, make_record(lognormal(2, scale=2.0), workers=4))
    text = repr(c)
    assert text.splitlines()[0].startswith(c.verdict)
    assert "Mann-Whitney U p =" in text and "B/A" in text
    html = c._repr_html_()
    assert c.verdict in html and "<table>" in html


def test_bad_arguments_raise_named_errors(base: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="threshold"):
        compare_frames(base, base, threshold=1.5)
    with pytest.raises(ValueError, match="confidence"):
        compare_frames(base, base, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        compare_frames(base, base, resamples=10)
    with pytest.raises(KeyError, match="no_such"):
        compare_frames(base, base, metric="no_such")
    failed = make_record([1.0, 2.0], outcomes=["crashed", "crashed"])
    with pytest.raises(ValueError, match="B has no ok call"):
        compare_frames(base, failed)
    with pytest.raises(ValueError, match="a ratio needs it > 0"):
        compare_frames(base, base, metric="wait_ms")


def test_missing_scipy_names_the_stats_extra(
    base: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import now fails
    c = compare_frames(base, base)
    with pytest.raises(ImportError, match=r"fnrun-nb\[stats\]"):
        c.p_value
    assert "pip install 'fnrun-nb[stats]'" in repr(c)


# --- on real batches ------------------------------------------------------------------


def test_batch_compare_on_two_real_batches() -> None:
    # The same inputs through a 2 ms and an 80 ms handler: B is several times slower.
    # A busy machine adds its scheduling delay to every call of both (tens of ms under
    # load); the gap is wide enough that B stays over 2.5 times slower with it.
    inputs = [f"input {i}" for i in range(10)]
    delay = TEST_HANDLERS / "delay.py"
    with Pool(f"{delay} 0.002", workers=2, timeout=10) as pool:
        a = pool.map(inputs, repeat=3, progress=False)
    with Pool(f"{delay} 0.08", workers=2, timeout=10) as pool:
        b = pool.map(inputs, repeat=3, progress=False)
    c = a.compare(b)
    assert c.batches == (a, b)
    assert c.n == (30, 30) and c.metric == "service_ms"
    assert c.medians == (
        pytest.approx(np.median(a.df["service_ms"])), pytest.approx(np.median(b.df["service_ms"]))
    )
    assert c.direction == "slower" and c.verdict.startswith("B is ")
    assert 2.5 < c.ci[0] <= c.ratio <= c.ci[1]
    # Joined on input_index: every input on both sides, each slower on B.
    table = c.per_input()
    assert sorted(table.index) == list(range(10))
    assert (table["n_A"] == 3).all() and (table["ratio"] > 2).all()
    # Against the bare record: the same statistics, no batches to hand back.
    bare = a.compare(b.df)
    assert bare.batches is None and bare.ci == c.ci and bare.verdict == c.verdict
    assert b.compare(a).direction == "faster"
