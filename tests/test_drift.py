"""Drift and leaks (``batch.drift()``): trends with known answers on records whose
schema comes from a real batch, then the same question asked of real processes.

The synthetic records are one row of a real echo batch repeated, with the worker
slot, generation, call number and the metric set by numpy: every other column is
exactly what a run records, so ``Batch.from_frame`` and the analysis see a real
record's dtypes.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest
from conftest import HANDLERS, TEST_HANDLERS

from fnrun_nb import Pool
from fnrun_nb.batch import Batch, DriftReport, run_batch
from fnrun_nb.batch.analysis import drift
from fnrun_nb.batch.analysis.drift import (
    BINS,
    GROWTH_MIN_CHANGE,
    GROWTH_MIN_MS,
    GROWTH_MIN_PER_1000,
    LEAK_MIN_MIB,
    MAX_POINTS,
    MIN_CALLS,
    SUMMARY_MIN_CALLS,
    VERDICTS,
    drift_note,
)

pytest.importorskip("scipy")

LEAKY = TEST_HANDLERS / "leaky_rss.py"


@pytest.fixture(scope="module")
def template() -> pd.DataFrame:
    """One ok row of a real batch (echo handler, two workers)."""
    with Pool(str(HANDLERS / "echo.py"), workers=2) as pool:
        batch = pool.map([b"a", b"b", b"c", b"d"], progress=False)
    df = batch.df
    assert (df["outcome"] == "ok").all()
    return df.iloc[[0]].reset_index(drop=True)


def record(
    template: pd.DataFrame,
    processes: Sequence[tuple[int, int, int]],
    *,
    dask_workers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows for ``processes`` ``(worker, generation, calls)`` in the order a batch
    records them (round-robin over the processes, each one's calls in order); with
    ``dask_workers``, process ``i`` runs on ``dask_workers[i]``."""
    workers, gens, calls, dask = [], [], [], []
    longest = max(n for _, _, n in processes)
    for c in range(1, longest + 1):
        for i, (w, g, n) in enumerate(processes):
            if c <= n:
                workers.append(w)
                gens.append(g)
                calls.append(c)
                if dask_workers is not None:
                    dask.append(dask_workers[i])
    n = len(calls)
    df = template.iloc[np.zeros(n, dtype=np.int64)].reset_index(drop=True)
    df["input_index"] = np.arange(n, dtype="int64")
    df["worker"] = pd.array(workers, dtype="Int64")
    df["generation"] = pd.array(gens, dtype="Int64")
    df["call_on_worker"] = pd.array(calls, dtype="Int64")
    df["cold"] = pd.array(np.asarray(calls) == 1, dtype="boolean")
    if dask_workers is not None:
        df["host"] = "node"
        df["dask_worker"] = pd.Series(dask, dtype=object)
    return df


def calls_of(df: pd.DataFrame) -> np.ndarray:
    out: np.ndarray = df["call_on_worker"].to_numpy(dtype=float)
    return out


def test_constants_are_the_documented_thresholds() -> None:
    assert MIN_CALLS == 30 and MIN_CALLS <= 50
    assert LEAK_MIN_MIB == 1.0 and GROWTH_MIN_PER_1000 == 0.01
    assert GROWTH_MIN_CHANGE == 0.05 and GROWTH_MIN_MS == 0.1 and SUMMARY_MIN_CALLS == 100
    assert MAX_POINTS == 500 and BINS < MAX_POINTS
    assert VERDICTS == ("leak", "growth", "decline", "no drift", "too few calls")


def test_known_leak_is_found_within_20_percent(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    df = record(template, [(w, 1, 300) for w in range(4)])
    call = calls_of(df)
    rss = 40 + 0.25 * call + rng.normal(0, 0.05, len(df))
    rss[rng.choice(len(df), 10, replace=False)] += 30  # a few outliers: Theil-Sen ignores them
    df["rss_mib"] = rss
    report = Batch.from_frame(df).drift("rss_mib")
    assert isinstance(report, DriftReport)
    assert report.verdict == "leak" and report.memory and report.unit == "MiB"
    assert report.slope == pytest.approx(0.25, rel=0.2)
    assert report.ci[0] <= 0.25 <= report.ci[1] or report.ci[1] - report.ci[0] < 0.01
    assert list(report.df["verdict"]) == ["leak"] * 4
    np.testing.assert_allclose(report.df["slope"], 0.25, rtol=0.2)
    assert (report.df["ci_low"] > 0).all() and (report.df["calls"] == 300).all()
    assert report.sentence.startswith("rss_mib grows 0.25 MiB per call on all 4 workers (95% CI ")
    assert report.sentence.endswith("): a leak")
    assert report.df["sentence"].str.contains("a leak").all()


def test_flat_noisy_series_has_no_drift(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    df = record(template, [(w, 1, 400) for w in range(3)])
    df["service_ms"] = rng.lognormal(0, 0.4, len(df))
    df["rss_mib"] = 40 + rng.normal(0, 0.3, len(df))
    batch = Batch.from_frame(df)
    for metric in ("service_ms", "rss_mib"):
        report = batch.drift(metric)
        assert report.verdict == "no drift", report
        assert set(report.df["verdict"]) == {"no drift"}
        assert report.sentence.startswith("no drift")
        assert np.isnan(report.slope)


@pytest.mark.parametrize(
    ("height", "at"), [(4 / 1024, 0.5), (4 / 1024, 0.2), (64.0, 0.5), (64.0, 0.3), (8.0, 0.9)]
)
def test_a_single_step_is_not_a_leak(template: pd.DataFrame, height: float, at: float) -> None:
    rng = np.random.default_rng(2)
    df = record(template, [(w, 1, 400) for w in range(2)])
    call = calls_of(df)
    for noise in (0.0, 0.01):
        df["rss_mib"] = 40 + height * (call > 400 * at) + rng.normal(0, noise, len(df))
        report = drift(df, "rss_mib")
        assert report.verdict != "leak", (height, at, noise, str(report))
        assert "leak" not in set(report.df["verdict"])


def test_too_few_calls(template: pd.DataFrame) -> None:
    df = record(template, [(0, 1, MIN_CALLS - 1), (1, 1, 10)])
    df["rss_mib"] = 40 + 1.0 * calls_of(df)
    report = drift(df, "rss_mib")
    assert report.verdict == "too few calls"
    assert set(report.df["verdict"]) == {"too few calls"}
    assert report.sentence.startswith("too few calls")
    assert str(MIN_CALLS) in report.sentence
    # Mixed: the long process is judged, the short one is not.
    df = record(template, [(0, 1, 200), (1, 1, 10)])
    df["rss_mib"] = 40 + 1.0 * calls_of(df)
    report = drift(df, "rss_mib")
    assert list(report.df["verdict"]) == ["leak", "too few calls"]
    assert report.verdict == "leak" and "on worker 0 " in report.sentence


def test_service_time_growth_on_one_worker(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    df = record(template, [(w, 1, 3000) for w in range(4)])
    call = calls_of(df)
    growing = (df["worker"] == 2).to_numpy()
    base = 2.0 * (1 + rng.normal(0, 0.03, len(df)))
    # 3.1% of the median per 1,000 calls on worker 2 (its median is the mid-life value,
    # 1 + 1.5 rate times the first).
    rate = 0.031 / (1 - 0.031 * 1.5)
    df["service_ms"] = np.where(growing, base * (1 + rate * call / 1000), base)
    report = Batch.from_frame(df).drift()
    assert report.verdict == "growth" and not report.memory
    rows = report.df.set_index("worker")
    assert rows.loc[2, "verdict"] == "growth"
    assert set(rows.drop(index=2)["verdict"]) == {"no drift"}
    assert rows.loc[2, "pct_per_1000"] == pytest.approx(3.1, rel=0.2)
    pattern = r"service_ms grows ([\d.]+)% per 1,000 calls on worker 2 \(95% CI "
    m = re.match(pattern, report.sentence)
    assert m, report.sentence
    assert float(m.group(1)) == pytest.approx(3.1, rel=0.2)
    assert report.sentence.endswith(": a slowdown")


def test_tiny_or_bursty_time_changes_are_not_growth(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(11)
    # A fast handler 30% slower at the end of 50 calls, but by 0.015 ms: noise.
    df = record(template, [(w, 1, 50) for w in range(4)])
    call = calls_of(df)
    df["service_ms"] = 0.05 * (1 + 0.3 * call / 50) * (1 + rng.normal(0, 0.01, len(df)))
    report = drift(df)
    assert (report.df["ci_low"] > 0).all()
    assert report.verdict == "no drift", str(report)
    # A burst of load on the machine: calls 150-250 of 400 twice as slow.
    df = record(template, [(w, 1, 400) for w in range(2)])
    call = calls_of(df)
    burst = (call > 150) & (call <= 250)
    df["service_ms"] = 2.0 * np.where(burst, 2.0, 1.0) * (1 + rng.normal(0, 0.05, len(df)))
    assert drift(df).verdict == "no drift", str(drift(df))


def test_decline(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(4)
    df = record(template, [(w, 1, 1000) for w in range(2)])
    call = calls_of(df)
    df["service_ms"] = 5.0 * (1 - 0.2 * call / 1000) * (1 + rng.normal(0, 0.02, len(df)))
    report = drift(df)
    assert report.verdict == "decline"
    assert set(report.df["verdict"]) == {"decline"}
    assert (report.df["ci_high"] < 0).all()
    assert report.sentence.startswith("service_ms declines ")
    assert "on both workers (95% CI " in report.sentence


def test_each_generation_is_its_own_trend(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(5)
    df = record(template, [(0, 1, 200), (0, 2, 200), (1, 1, 200)])
    call = calls_of(df)
    leaky = ((df["worker"] == 0) & (df["generation"] == 1)).to_numpy()
    df["rss_mib"] = 40 + np.where(leaky, 0.5 * call, 0.0) + rng.normal(0, 0.02, len(df))
    report = drift(df, "rss_mib")
    table = report.df.set_index(["worker", "generation"])
    assert list(table.index) == [(0, 1), (0, 2), (1, 1)]
    assert table.loc[(0, 1), "verdict"] == "leak"
    assert table.loc[(0, 1), "slope"] == pytest.approx(0.5, rel=0.2)
    assert table.loc[(0, 2), "verdict"] == "no drift"
    assert table.loc[(1, 1), "verdict"] == "no drift"
    assert report.verdict == "leak" and " on worker 0 (" in report.sentence
    assert report.df["generation"].dtype == "int64" and report.df["worker"].dtype == "int64"


def test_dask_slots_are_keyed_by_dask_worker(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(6)
    a, b = "tcp://10.0.0.1:4000", "tcp://10.0.0.2:4000"
    df = record(
        template, [(0, 1, 300), (1, 1, 300), (0, 1, 300), (1, 1, 300)],
        dask_workers=[a, a, b, b],
    )
    call = calls_of(df)
    on_b = (df["dask_worker"] == b).to_numpy()
    df["rss_mib"] = 40 + np.where(on_b, 0.1 * call, 0.0) + rng.normal(0, 0.01, len(df))
    batch = Batch.from_frame(df)
    report = batch.drift("rss_mib")
    assert list(report.df.columns[:3]) == ["dask_worker", "worker", "generation"]
    assert len(report.df) == 4
    flagged = report.flagged
    assert set(flagged["dask_worker"]) == {b} and sorted(flagged["worker"]) == [0, 1]
    assert report.verdict == "leak"
    assert f"on workers 0 on {b} and 1 on {b} (" in report.sentence
    assert f"on {b}" in str(report)


def test_thousands_of_calls_are_fitted_on_bins_quickly(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    df = record(template, [(w, 1, n) for w in range(4)])
    call = calls_of(df)
    df["rss_mib"] = 40 + 0.001 * call + rng.normal(0, 0.05, len(df))
    t0 = time.perf_counter()
    report = drift(df, "rss_mib")
    elapsed = time.perf_counter() - t0
    assert report.df["binned"].all()
    assert report.verdict == "leak"
    np.testing.assert_allclose(report.df["slope"], 0.001, rtol=0.05)
    assert (report.df["calls"] == n).all()
    assert elapsed < 5, f"drift of 80,000 rows took {elapsed:.2f} s"
    # A short process is fitted on its calls.
    short = drift(record(template, [(0, 1, MAX_POINTS)]).assign(rss_mib=1.0), "rss_mib")
    assert not short.df["binned"].any()


def test_no_ok_call_is_too_few_calls(template: pd.DataFrame) -> None:
    df = record(template, [(0, 1, 40)])
    df["outcome"] = "crashed"
    report = Batch.from_frame(df).drift()
    assert report.verdict == "too few calls" and report.df.empty
    assert report.sentence == "too few calls: no ok call has a service_ms value"
    assert "<table>" in report._repr_html_()


def test_failed_calls_are_left_out(template: pd.DataFrame) -> None:
    df = record(template, [(0, 1, 100)])
    call = calls_of(df)
    df["rss_mib"] = 40 + 0.5 * call
    crashed = call % 10 == 0
    df.loc[crashed, "outcome"] = "crashed"
    df.loc[crashed, "rss_mib"] = np.nan
    report = drift(df, "rss_mib")
    assert report.df["calls"].tolist() == [90]
    assert report.verdict == "leak"


def test_missing_metric_is_a_clear_error(template: pd.DataFrame) -> None:
    batch = Batch.from_frame(record(template, [(0, 1, 40)]))
    with pytest.raises(ValueError, match=r"rss_mib needs resources=True.*service_ms"):
        batch.drift("rss_mib")
    with pytest.raises(ValueError, match="handler_ms needs handler_timing=True"):
        batch.drift("handler_ms")
    with pytest.raises(ValueError, match="'nope'.*float columns: .*latency_ms"):
        batch.drift("nope")
    with pytest.raises(ValueError, match="'error'"):
        batch.drift("error")


def test_without_scipy_the_error_names_the_extra(
    template: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = record(template, [(0, 1, 40)])
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r"fnrun-nb\[stats\]"):
        drift(df)
    assert drift_note(df.assign(rss_mib=40 + calls_of(df))) is None


def test_str_html_and_immutability(template: pd.DataFrame) -> None:
    df = record(template, [(0, 1, 100), (1, 1, 100)])
    df["rss_<b>"] = 40 + 0.5 * calls_of(df)
    report = drift(df, "rss_<b>")
    text = str(report)
    assert text.splitlines()[0] == report.sentence
    assert len(text.splitlines()) == 3
    assert repr(report).startswith("<DriftReport rss_<b>: ")
    html = report._repr_html_()
    assert "<b>" not in html and "rss_&lt;b&gt;" in html
    assert html.count("<tr>") == 3 and "<th>verdict</th>" in html
    with pytest.raises(FrozenInstanceError):
        report.verdict = "no drift"  # type: ignore[misc]


def test_plot_draws_each_process_and_its_trend(template: pd.DataFrame) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(8)
    df = record(template, [(0, 1, 100), (0, 2, 50), (1, 1, 10)])
    df["rss_mib"] = 40 + 0.3 * calls_of(df) + rng.normal(0, 0.01, len(df))
    report = drift(df, "rss_mib")
    ax = report.plot()
    try:
        # A line per process, a trend per fitted process (the 10-call one has none).
        assert len(ax.get_lines()) == 3 + 2
        assert ax.get_xlabel().startswith("call on worker")
        assert ax.get_ylabel() == "rss_mib (MiB)"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "worker 0 gen 1", "worker 0 gen 2", "worker 1 gen 1",
        ]
    finally:
        plt.close(ax.figure)
    fig, given = plt.subplots()
    try:
        assert report.plot(ax=given) is given
    finally:
        plt.close(fig)


def test_summary_notes_a_leak_or_slowdown_in_one_line(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(9)
    df = record(template, [(w, 1, 300) for w in range(4)])
    call = calls_of(df)
    df["service_ms"] = rng.lognormal(0, 0.2, len(df))
    flat = Batch.from_frame(df.copy()).summary()
    assert flat.drift is None and "drift" not in str(flat)
    df["rss_mib"] = 40 + 0.25 * call
    leak = Batch.from_frame(df.copy()).summary()
    assert leak.drift is not None and "a leak" in leak.drift
    lines = [line for line in str(leak).splitlines() if "drift" in line]
    assert lines == [f"drift    {leak.drift}"]
    assert "batch.drift(&#x27;rss_mib&#x27;)" in leak._repr_html_()
    df = df.drop(columns="rss_mib")
    df["service_ms"] = 1.0 + 1.0 * call / 1000 + rng.normal(0, 0.002, len(df))
    slow = Batch.from_frame(df).summary()
    assert slow.drift is not None and "a slowdown" in slow.drift


def test_summary_counts_only_long_processes(template: pd.DataFrame) -> None:
    # A clear leak on processes of 60 calls: batch.drift() says so, the headline waits
    # for SUMMARY_MIN_CALLS.
    df = record(template, [(w, 1, 60) for w in range(4)])
    df["rss_mib"] = 40 + 0.5 * calls_of(df)
    batch = Batch.from_frame(df)
    assert batch.drift("rss_mib").verdict == "leak"
    assert SUMMARY_MIN_CALLS > 60 and batch.summary().drift is None
    # One leaking process among four long ones is not a headline either.
    df = record(template, [(w, 1, 200) for w in range(4)])
    df["rss_mib"] = 40 + np.where((df["worker"] == 1).to_numpy(), 0.5 * calls_of(df), 0.0)
    batch = Batch.from_frame(df)
    assert batch.drift("rss_mib").verdict == "leak"
    assert batch.summary().drift is None


def test_summary_note_is_cheap_on_100k_rows(template: pd.DataFrame) -> None:
    rng = np.random.default_rng(10)
    # 8 slots, each through 25 processes of 500 calls: 200 processes, 100,000 rows.
    df = record(template, [(w, g, 500) for w in range(8) for g in range(1, 26)])
    df["service_ms"] = rng.lognormal(0, 0.3, len(df))
    drift_note(df)  # warm
    t0 = time.perf_counter()
    assert drift_note(df) is None
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"the summary's drift screen took {elapsed:.3f} s on 100k rows"


def test_drift_of_a_real_batch_is_reached_through_batch(template: pd.DataFrame) -> None:
    with Pool(str(HANDLERS / "echo.py"), workers=1) as pool:
        batch = pool.map([b"x"] * 40, progress=False)
    report = batch.drift()
    assert report.df["calls"].tolist() == [40]
    assert report.verdict in VERDICTS and report.verdict != "too few calls"


# --- real processes ------------------------------------------------------------------


def _rss_after_each_call(command: list[str] | str, calls: int) -> np.ndarray:
    """One worker, ``calls`` invocations one after another, its RSS (MiB) read by
    psutil after each: what ``rss_mib`` measures, taken from outside."""
    psutil = pytest.importorskip("psutil")
    rss = []
    with Pool(command, workers=1) as pool:
        for _ in range(calls):
            result = pool.invoke(b"x")
            assert result.info is not None
            rss.append(psutil.Process(result.info.pid).memory_info().rss / 2**20)
    return np.asarray(rss)


def test_a_real_leak_measured_from_outside(template: pd.DataFrame) -> None:
    kib = 256
    calls = 120
    for command, leaks in (
        ([sys.executable, str(LEAKY), str(kib)], True),
        (str(HANDLERS / "echo.py"), False),
    ):
        df = record(template, [(0, 1, calls)])
        df["rss_mib"] = _rss_after_each_call(command, calls)
        report = drift(df, "rss_mib")
        if leaks:
            assert report.verdict == "leak", str(report)
            assert report.slope == pytest.approx(kib / 1024, rel=0.2)
        else:
            assert report.verdict == "no drift", str(report)


# Needs Pool.map(..., resources=True), which adds the rss_mib column per call.

_HAS_RESOURCES = any(
    "resources" in inspect.signature(f).parameters for f in (run_batch, Pool.map)
)


@pytest.mark.skipif(not _HAS_RESOURCES, reason="needs Pool.map(..., resources=True)")
def test_a_leaking_handler_is_found_and_an_echo_is_not() -> None:
    kib = 256
    with Pool([sys.executable, str(LEAKY), str(kib)], workers=2) as pool:
        leaky = pool.map([b"x"] * 240, resources=True, progress=False)
    report = leaky.drift("rss_mib")
    assert report.verdict == "leak", str(report)
    assert report.slope == pytest.approx(kib / 1024, rel=0.2)
    with Pool(str(HANDLERS / "echo.py"), workers=2) as pool:
        echo = pool.map([b"x"] * 240, resources=True, progress=False)
    assert echo.drift("rss_mib").verdict == "no drift", str(echo.drift("rss_mib"))
