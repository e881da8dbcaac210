"""Percentiles, the per-worker view and warm-up: known answers on constructed records,
then the same questions asked of real batches through ``Batch``'s methods."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from _frames import make_record
from conftest import HANDLERS, TEST_HANDLERS

from fnrun_nb import Pool
from fnrun_nb.batch import Batch
from fnrun_nb.batch.analysis import by_worker, percentiles, quantiles, warmup

Q = (50, 90, 99, 99.9)
LABELS = ["p50", "p90", "p99", "p99.9"]


@pytest.fixture(scope="module")
def record() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2000
    outcomes = ["ok"] * n
    for i in (5, 700, 1400):
        outcomes[i] = "crashed"
    outcomes[900] = "timeout"
    return make_record(
        rng.lognormal(0, 0.5, n),
        wait_ms=rng.exponential(0.2, n),
        workers=4,
        outcomes=outcomes,
        generations=[1 if i < 1000 else 2 for i in range(n)],
    )


def test_percentiles_equal_numpy(record: pd.DataFrame) -> None:
    table = percentiles(record)
    ok = record[record["outcome"] == "ok"]
    assert list(table.index) == ["latency_ms", "wait_ms", "service_ms"]
    assert list(table.columns) == ["n", *LABELS]
    for metric in table.index:
        assert table.loc[metric, "n"] == len(ok)
        expected = np.percentile(ok[metric].to_numpy(), Q)
        np.testing.assert_allclose(table.loc[metric, LABELS].to_numpy(float), expected, rtol=1e-12)


def test_percentiles_grouped_equal_numpy_per_group(record: pd.DataFrame) -> None:
    table = percentiles(record, q=(50, 99), by="worker")
    ok = record[record["outcome"] == "ok"]
    assert table.index.names == ["worker", "metric"]
    assert sorted(set(table.index.get_level_values("worker"))) == [0, 1, 2, 3]
    for w in range(4):
        values = ok.loc[ok["worker"] == w, "service_ms"].to_numpy()
        got = table.loc[(w, "service_ms"), ["p50", "p99"]].to_numpy(float)
        np.testing.assert_allclose(got, np.percentile(values, (50, 99)), rtol=1e-12)
        assert table.loc[(w, "service_ms"), "n"] == len(values)
    # Metrics keep their reading order inside each group.
    assert list(table.loc[0].index) == ["latency_ms", "wait_ms", "service_ms"]


def test_percentiles_by_outcome_uses_every_row_when_asked(record: pd.DataFrame) -> None:
    assert set(percentiles(record, by="outcome").index.get_level_values(0)) == {"ok"}
    table = percentiles(record, q=50, by="outcome", ok_only=False)
    crashed = record.loc[record["outcome"] == "crashed", "latency_ms"].to_numpy()
    assert table.loc[("crashed", "latency_ms"), "p50"] == pytest.approx(np.median(crashed))
    assert table.loc[("crashed", "latency_ms"), "n"] == 3


def test_quantiles_helper_drops_nan_and_labels_columns() -> None:
    assert quantiles([1.0, np.nan, 3.0], (50, 99.9)) == {"p50": 2.0, "p99.9": pytest.approx(2.998)}
    assert all(np.isnan(v) for v in quantiles([np.nan], (50,)).values())


def test_percentiles_bad_arguments(record: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="percentiles must be numbers in"):
        percentiles(record, q=(50, 101))
    with pytest.raises(ValueError, match="at least one"):
        percentiles(record, q=())
    with pytest.raises(KeyError, match="no_such"):
        percentiles(record, by="no_such")


def test_by_worker_counts_calls_failures_and_replacements(record: pd.DataFrame) -> None:
    table = by_worker(record)
    assert list(table.index) == [0, 1, 2, 3]
    assert table["calls"].tolist() == [500, 500, 500, 500]
    # Rows 5, 700, 900, 1400 failed: slots 1, 0, 0, 0.
    assert table["failures"].tolist() == [3, 1, 0, 0]
    assert table["replacements"].tolist() == [1, 1, 1, 1]
    assert table["processes"].tolist() == [2, 2, 2, 2]
    busy = record.groupby("worker")["service_ms"].sum() / 1e3
    np.testing.assert_allclose(table["busy_s"], busy.to_numpy())
    wall = (record["finished"].max() - record["started"].min()).total_seconds()
    np.testing.assert_allclose(table["utilisation"], busy.to_numpy() / wall)
    ok = record[record["outcome"] == "ok"]
    w0 = ok.loc[ok["worker"] == 0, "service_ms"]
    assert table.loc[0, "service_p50_ms"] == pytest.approx(np.median(w0))
    assert table.loc[0, "service_p99_ms"] == pytest.approx(np.percentile(w0, 99))


def test_by_worker_keys_slots_by_dask_worker_too() -> None:
    df = make_record(np.ones(8), workers=2)
    df["dask_worker"] = ["tcp://a"] * 4 + ["tcp://b"] * 4
    table = by_worker(df)
    assert table.index.names == ["dask_worker", "worker"]
    assert list(table.index) == [("tcp://a", 0), ("tcp://a", 1), ("tcp://b", 0), ("tcp://b", 1)]
    assert table["calls"].tolist() == [2, 2, 2, 2]


def test_warmup_finds_a_slow_first_call() -> None:
    rng = np.random.default_rng(1)
    service = rng.lognormal(0, 0.3, 400)
    service[:4] += 50  # the first call of each of the 4 processes
    report = warmup(make_record(service, workers=4))
    assert report.settles_after == 1
    assert report.cold["n"] == 4 and report.warm["n"] == 396
    assert report.cold_penalty_ms == pytest.approx(50, abs=2)
    assert list(report.curve.columns) == ["n", "p50", "p90"]
    assert report.curve.index[0] == 1 and report.curve["n"].iloc[0] == 4
    assert "settles after 1 call per process" in repr(report)
    assert "settles after 1 call" in report._repr_html_()


def test_warmup_without_a_cold_start_is_settled_from_the_first_call() -> None:
    report = warmup(make_record(np.random.default_rng(2).lognormal(0, 0.3, 400), workers=4))
    assert report.settles_after == 0
    assert "no warm-up" in repr(report)


def test_warmup_of_a_batch_without_ok_calls_does_not_settle() -> None:
    report = warmup(make_record(np.ones(4), outcomes=["crashed"] * 4))
    assert report.settles_after is None and report.curve.empty
    assert "does not settle" in repr(report)


def test_warmup_ignores_differences_below_the_noise_floor() -> None:
    # 15 us calls whose second call takes 60 us: relative noise, not a warm-up.
    service = np.full(400, 0.015)
    service[4:8] = 0.06
    assert warmup(make_record(service, workers=4)).settles_after == 0
    assert warmup(make_record(service, workers=4), floor_ms=0).settles_after == 2


def test_warmup_prints_its_tolerance_exactly() -> None:
    service = np.random.default_rng(1).lognormal(0, 0.3, 400)
    service[:4] += 50
    report = warmup(make_record(service, workers=4), tolerance=0.025)
    assert "(within 2.5% of the steady " in repr(report)
    assert "within 2.5% of the steady" in report._repr_html_()
    assert "within 25% of the steady" in repr(warmup(make_record(service, workers=4)))


def test_by_worker_counts_a_replacement_after_the_last_call() -> None:
    # Slot 0: its last call crashed (the pool replaced that process too).  Slot 1: two
    # processes, its last call ok.  Slot 2: its last call was killed when the batch was
    # stopped (replaced), slot 3's when the pool was closing (nothing replaced).
    outcomes = ["ok"] * 12
    outcomes[8], outcomes[10], outcomes[11] = "crashed", "cancelled", "cancelled"
    generations = [1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1]
    df = make_record(np.ones(12), workers=4, outcomes=outcomes, generations=generations)
    df.loc[10, "error"] = "cancelled: the batch was interrupted (HandlerCrashed: killed)"
    df.loc[11, "error"] = "PoolClosed: the pool was closed while this call ran on pid 9"
    table = by_worker(df)
    assert table["replacements"].tolist() == [1, 1, 1, 0]
    # A recycle after the last call shows only with the pool's max_calls_per_worker.
    recycled = make_record(np.ones(6), workers=1, generations=[1, 1, 2, 2, 3, 3])
    assert by_worker(recycled)["replacements"].tolist() == [2]
    assert by_worker(recycled, max_calls_per_worker=2)["replacements"].tolist() == [3]


def test_warmup_bad_arguments() -> None:
    df = make_record(np.ones(4))
    with pytest.raises(ValueError, match="tolerance"):
        warmup(df, tolerance=-1)
    with pytest.raises(ValueError, match="run"):
        warmup(df, run=0)
    with pytest.raises(ValueError, match="floor_ms"):
        warmup(df, floor_ms=-1)


# --- on real batches ------------------------------------------------------------------


def test_warmup_detected_on_a_handler_whose_first_call_sleeps() -> None:
    # 200 ms on the first call of each process, 10 ms on every later one.  Four
    # processes make each point of the curve a median of four calls, which one late
    # wake-up on a busy machine cannot move.
    with Pool(f"{TEST_HANDLERS / 'cold_start.py'} 0.2 0.01", workers=4, timeout=10) as pool:
        batch = pool.map([b"x"] * 60, progress=False)
    report = batch.warmup()
    # The first calls overlap the other interpreters starting up on a small, shared
    # machine, so a call or two after the cold one can be slow too: the report is
    # right to say so.  The detection is the point: slow first calls, settled soon.
    assert report.settles_after is not None and 1 <= report.settles_after <= 3, report.curve
    assert report.cold["n"] == 4
    assert report.cold["p50"] >= 200
    assert 10 <= report.warm["p50"] < 50
    assert report.cold_ratio > 4


def test_batch_methods_on_a_real_batch(echo_handler: str) -> None:
    with Pool(echo_handler, workers=2, timeout=10) as pool:
        batch = pool.map([b"a", b"bb", b"ccc"], repeat=10, progress=False)
    table = batch.percentiles(q=(50, 99))
    ok = batch.df
    np.testing.assert_allclose(
        table.loc["latency_ms", ["p50", "p99"]].to_numpy(float),
        np.percentile(ok["latency_ms"].to_numpy(), (50, 99)),
    )
    # One way to compute a percentile: the summary agrees with percentiles().
    assert batch.summary().latency["total"]["p50"] == pytest.approx(table.loc["latency_ms", "p50"])
    workers = batch.by_worker()
    assert workers["calls"].sum() == 30 and workers["failures"].sum() == 0
    assert isinstance(batch.percentiles(by="cold"), pd.DataFrame)
    assert isinstance(Batch.from_frame(batch.df).warmup().curve, pd.DataFrame)


def _replacements_when_spawned(pool: Pool, expected: int) -> int:
    """The pool's replacement count once it reaches ``expected`` (a replacement is
    counted when its process has spawned, just after the batch returns), or after 10 s."""
    deadline = time.monotonic() + 10
    while pool.snapshot().replacements < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return pool.snapshot().replacements


def test_by_worker_replacements_match_the_pool_on_real_batches() -> None:
    flaky = str(HANDLERS / "flaky.py")
    # The slot's last call crashed: no later call shows the new process, the pool
    # replaced it all the same.
    with Pool(flaky, workers=1, timeout=10) as pool:
        batch = pool.map(["0.001", "crash"], progress=False)
        assert batch.df["outcome"].tolist() == ["ok", "crashed"]
        assert batch.by_worker().loc[0, "replacements"] == 1
        assert _replacements_when_spawned(pool, 1) == 1
    # A crash mid-batch (a new generation) and a timeout as the last call.
    with Pool(flaky, workers=1, timeout=2) as pool:
        batch = pool.map(["a", "crash", "b", "hang"], progress=False)
        assert batch.df["outcome"].tolist() == ["ok", "crashed", "ok", "timeout"]
        assert batch.df["generation"].tolist() == [1, 1, 2, 2]
        assert batch.by_worker().loc[0, "replacements"] == 2
        assert _replacements_when_spawned(pool, 2) == 2
    # Recycling after max_calls_per_worker, the last call included.
    with Pool(str(HANDLERS / "echo.py"), workers=1, max_calls_per_worker=2) as pool:
        batch = pool.map(["a", "b", "c", "d"], progress=False)
        table = by_worker(batch.df, max_calls_per_worker=batch.config["max_calls_per_worker"])
        assert table.loc[0, "replacements"] == 2
        assert _replacements_when_spawned(pool, 2) == 2


def test_percentiles_by_status_on_a_real_batch() -> None:
    # flaky.py: numbers ending in 3 answer status 500, ending in 7 crash, others 200.
    with Pool(str(HANDLERS / "flaky.py"), workers=2, timeout=10) as pool:
        batch = pool.map([str(i) for i in range(30)], progress=False)
    df = batch.df
    assert df["status"].value_counts().to_dict() == {200: 24, 500: 3}
    table = batch.percentiles(q=(50, 90), by="status")
    assert table.index.names == ["status", "metric"]
    assert sorted(set(table.index.get_level_values("status"))) == [200, 500]
    for status in (200, 500):
        rows = df[df["status"] == status]
        for metric in ("latency_ms", "wait_ms", "service_ms"):
            assert table.loc[(status, metric), "n"] == len(rows)
            np.testing.assert_allclose(
                table.loc[(status, metric), ["p50", "p90"]].to_numpy(float),
                np.percentile(rows[metric].to_numpy(float), (50, 90)),
                rtol=1e-12,
            )
    # The crashed calls have no status: left out, even with every row asked for.
    every = batch.percentiles(q=50, by="status", ok_only=False)
    assert every.loc[(200, "latency_ms"), "n"] == 24 and len(every) == len(table)
