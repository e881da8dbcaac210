"""Pool.map and the batch record: every column means what it says.

Real handler processes throughout: the SDK echo handler (answers with its input and
the per-call env) and ``sleepy`` (sleeps the seconds it is given; ``crash`` exits 3).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from fnrun_nb import Input, Pool
from fnrun_nb.batch import COLUMNS, OUTCOMES, Batch, BatchProgress, Summary

from conftest import HANDLERS, TEST_HANDLERS

SLEEPY = str(TEST_HANDLERS / "sleepy.py")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def echo_pool():
    with Pool(str(HANDLERS / "echo.py"), workers=2, timeout=10) as pool:
        yield pool


def test_columns_and_dtypes_are_the_contract(echo_pool: Pool) -> None:
    batch = echo_pool.map([b"a", "b"], progress=False)
    df = batch.df
    assert list(df.columns) == list(COLUMNS)
    for name, dtype in COLUMNS.items():
        assert str(df[name].dtype) == dtype, name
    assert list(df["outcome"].cat.categories) == list(OUTCOMES)
    assert df is batch.df  # built once, cached
    assert len(batch) == 2


def test_every_column_means_what_it_says(echo_pool: Pool) -> None:
    inputs = [b"", b"x" * 100, "héllo", Input(b"\x00\xff")]
    t0 = time.time()
    batch = echo_pool.map(inputs, repeat=2, progress=False)
    t1 = time.time()
    df = batch.df
    sent = [b"", b"x" * 100, "héllo".encode(), b"\x00\xff"]
    # submission order: every input once, then every input again
    assert df["input_index"].tolist() == [0, 1, 2, 3] * 2
    assert df["repeat"].tolist() == [0] * 4 + [1] * 4
    assert (df["outcome"] == "ok").all()
    assert df["status"].tolist() == [200] * 8
    assert df["data"].tolist() == sent * 2
    assert df["bytes_in"].tolist() == [len(d) for d in sent] * 2
    assert df["bytes_out"].tolist() == [len(d) for d in sent] * 2
    # times: no rate, so no schedule and no lag; latency = lag + wait + service
    assert df["scheduled"].isna().all()
    assert (df["lag_ms"] == 0).all()
    assert (df["latency_ms"] >= df["service_ms"]).all()
    assert np.allclose(df["latency_ms"], df["lag_ms"] + df["wait_ms"] + df["service_ms"])
    assert (df["wait_ms"] >= 0).all() and (df["service_ms"] > 0).all()
    assert (df["started"] >= pd.Timestamp(t0, unit="s", tz="UTC")).all()
    assert (df["finished"] <= pd.Timestamp(t1, unit="s", tz="UTC")).all()
    assert (df["finished"] >= df["started"]).all()
    took = (df["finished"] - df["started"]).dt.total_seconds() * 1e3
    assert np.allclose(took, df["service_ms"], atol=0.01)
    # deadline slack: the deadline is started + timeout
    assert np.allclose(df["deadline_slack_ms"], 10_000 - df["service_ms"], atol=0.01)
    assert set(df["worker"]) <= {0, 1}
    assert df["pid"].notna().all() and (df["generation"] >= 1).all()
    assert df["error"].isna().all() and df["stderr_tail"].isna().all()
    assert df["exit_code"].isna().all()
    assert batch.failed.empty
    assert batch.command == echo_pool.command
    assert batch.config["workers"] == 2 and batch.config["repeat"] == 2
    assert batch.interrupted is False and batch.wall_s is not None and batch.wall_s > 0


def test_env_round_trips_per_call_and_merges_under_the_common_env(echo_pool: Pool) -> None:
    inputs = [
        b"plain",
        (b"own", {"K": "item", "ONLY": "mine"}),
        ("text", {"UNICODE": "wörld ✓ = x"}),
        (b"none", None),
    ]
    df = echo_pool.map(inputs, env={"K": "common", "C": "1"}, progress=False).df
    expected = [
        {"K": "common", "C": "1"},
        {"K": "item", "C": "1", "ONLY": "mine"},  # the item's own value wins
        {"K": "common", "C": "1", "UNICODE": "wörld ✓ = x"},
        {"K": "common", "C": "1"},
    ]
    assert df["env_in"].tolist() == expected
    assert df["env"].tolist() == expected  # echo answers with the env it received
    assert df["data"].tolist() == [b"plain", b"own", b"text", b"none"]


def test_keep_data_false_drops_result_bytes_but_counts_them(echo_pool: Pool) -> None:
    batch = echo_pool.map([b"abc"] * 2000, keep_data=False, progress=False)
    df = batch.df
    assert len(df) == 2000
    assert df["data"].isna().all()
    assert (df["bytes_out"] == 3).all()
    assert (df["outcome"] == "ok").all()


def test_generations_call_numbers_and_cold_follow_the_processes() -> None:
    inputs = ["0", "0", "crash", "0", "0", "crash", "0", "0"]
    with Pool(SLEEPY, workers=1, timeout=10) as pool:
        df = pool.map(inputs, progress=False).df
    assert df["outcome"].tolist() == [
        "ok", "ok", "crashed", "ok", "ok", "crashed", "ok", "ok"
    ]
    # one slot: every crash replaces its process, generation + 1
    assert df["generation"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3]
    assert df["call_on_worker"].tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert df["pid"].nunique() == 3
    # cold marks exactly the first call of each process
    assert df["cold"].tolist() == [True, False, False, True, False, False, True, False]
    firsts = df.sort_values("call_on_worker").groupby("pid").head(1).index
    assert sorted(firsts) == sorted(df.index[df["cold"]])
    crashed = df[df["outcome"] == "crashed"]
    assert crashed["exit_code"].tolist() == [3, 3]
    assert crashed["status"].isna().all() and crashed["data"].isna().all()
    assert crashed["env"].tolist() == [{}, {}]
    assert crashed["error"].str.contains("exit code 3").all()


def test_rate_schedules_arrivals_at_fixed_times(echo_pool: Pool) -> None:
    rate = 100.0
    batch = echo_pool.map([b"r"] * 20, rate=rate, progress=False)
    df = batch.df
    scheduled = df["scheduled"]
    assert scheduled.notna().all()
    gaps = scheduled.diff().dropna().dt.total_seconds()
    assert np.allclose(gaps, 1 / rate, atol=1e-6)
    assert (df["lag_ms"] >= 0).all()
    # The calls really arrived at that pace, not all at once nor one after another as
    # fast as the pool answers (an echo answers in well under 10 ms): each call starts
    # no earlier than its scheduled time, 10 ms after the one before.
    late = (df["started"] - scheduled).dt.total_seconds()
    assert (late >= -1e-3).all(), late
    # How late a call starts is load, not pace: a runner descheduled past several
    # arrivals hands those calls over at once when it runs again.  What the batch
    # promises is that the delay is recorded: a call starts as late as its lag (the
    # runner's hand-over) plus its wait for a worker say, give or take the instant
    # between the pool's timing of the wait and its stamping of the start.
    accounted = (df["lag_ms"] + df["wait_ms"]) / 1e3
    unaccounted = late - accounted
    assert (unaccounted >= -1e-3).all(), unaccounted
    assert np.median(unaccounted) < 1e-3, unaccounted
    assert np.allclose(df["latency_ms"], df["lag_ms"] + df["wait_ms"] + df["service_ms"])
    # The whole batch spans its schedule: 20 calls at 100/s take at least 0.19 s.
    span = (df["finished"].max() - df["scheduled"].min()).total_seconds()
    assert span >= 19 / rate


def test_rate_above_capacity_shows_up_as_growing_latency() -> None:
    # One worker serving 0.1 s calls, arrivals every 0.04 s: an open loop falls
    # further behind with every call, and the delay is counted (lag), not hidden.
    with Pool(SLEEPY, workers=1, timeout=10) as pool:
        pool.invoke(b"0")
        df = pool.map(["0.1"] * 6, rate=25.0, progress=False).df
    lag = df["lag_ms"].to_numpy()
    assert (np.diff(lag) > 30).all(), lag  # each call ~60 ms later than the one before
    latency = df["latency_ms"].to_numpy()
    assert latency[-1] > latency[0] + 250
    assert (df["service_ms"] < df["latency_ms"]).iloc[1:].all()


def test_progress_is_live_and_pool_active_batch_is_set() -> None:
    with Pool(SLEEPY, workers=2, timeout=10) as pool:
        pool.invoke(b"0")
        seen: list[BatchProgress] = []
        actives: list[object] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                batch = pool.active_batch
                if batch is not None:
                    actives.append(batch)
                    seen.append(batch.progress())
                time.sleep(0.01)

        t = threading.Thread(target=watch)
        t.start()
        try:
            batch = pool.map(["0.02"] * 30, progress=False)
        finally:
            stop.set()
            t.join()
        assert pool.active_batch is None
        assert pool.last_batch is batch
    assert seen, "the watcher never saw the running batch"
    assert all(a is batch for a in actives)
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    assert any(not p.finished and 0 < p.done < 30 for p in seen)
    assert all(p.total == 30 and p.done == sum(p.counts.values()) for p in seen)
    final = batch.progress()
    assert final.finished and final.done == 30 and final.counts["ok"] == 30
    assert final.p50_ms == pytest.approx(batch.summary().latency["total"]["p50"])
    assert final.p99_ms == pytest.approx(batch.summary().latency["total"]["p99"])


def test_progress_bar_appears_only_when_asked_or_slow(
    echo_pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    echo_pool.map([b"q"] * 10)  # "auto": a batch this short shows no bar
    assert capsys.readouterr().err == ""
    echo_pool.map([b"q"] * 10, progress=False)
    assert capsys.readouterr().err == ""
    echo_pool.map([b"q"] * 10, progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "call" in err


def test_progress_bar_auto_appears_once_a_batch_runs_past_a_second(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Pool(SLEEPY, workers=1, timeout=10) as pool:
        pool.map(["0.3"] * 5)  # "auto", about 1.5 s: the bar shows up after ~1 s
    err = capsys.readouterr().err
    assert "5/5" in err and "call" in err, err


def test_summary_counts_all_rows_and_latency_over_ok_rows() -> None:
    with Pool(SLEEPY, workers=1, timeout=10) as pool:
        batch = pool.map(["0", "crash", "0", "0"], progress=False)
    s = batch.summary()
    assert isinstance(s, Summary)
    assert s.calls == 4 and s.ok_calls == 3 and s.failed == 1
    assert s.outcomes["ok"] == 3 and s.outcomes["crashed"] == 1
    assert list(s.outcomes) == list(OUTCOMES)
    assert s.statuses == {200: 3, None: 1}
    ok = batch.df[batch.df["outcome"] == "ok"]
    for name, column in (("total", "latency_ms"), ("wait", "wait_ms"), ("service", "service_ms")):
        row = s.latency[name]
        assert list(row) == ["p50", "p90", "p99", "p99.9", "max"]
        assert row["p50"] == pytest.approx(np.percentile(ok[column].astype(float), 50))
        assert row["max"] == pytest.approx(ok[column].max())
    assert s.wall_s == batch.wall_s and s.throughput > 0 and 0 < s.utilisation <= 1
    text = str(s)
    for word in ("p50", "p90", "p99", "p99.9", "max", "total", "wait", "service", "crashed 1"):
        assert word in text
    html = s._repr_html_()
    assert "<table" in html and "p99.9" in html and "ok calls" in html
    assert "4 calls" in repr(batch) and "3 ok" in repr(batch) and "1 crashed" in repr(batch)
    assert "<table" in batch._repr_html_()


def test_from_frame_rebuilds_a_finished_batch(echo_pool: Pool) -> None:
    batch = echo_pool.map([b"a", b"b", b"c"], progress=False)
    df = batch.df.assign(host="here")  # extra columns are kept
    again = Batch.from_frame(df, command=batch.command, wall_s=batch.wall_s, workers=2)
    assert again.df is df and len(again) == 3 and "host" in again.df.columns
    assert again.progress().finished and again.progress().counts["ok"] == 3
    assert again.summary().latency == batch.summary().latency
    with pytest.raises(ValueError, match="missing column"):
        Batch.from_frame(df.drop(columns=["latency_ms"]))
    with pytest.raises(TypeError, match="unknown Batch metadata"):
        Batch.from_frame(df, colour="red")


def test_empty_inputs_make_an_empty_batch(echo_pool: Pool) -> None:
    batch = echo_pool.map([], progress=False)
    assert len(batch) == 0 and list(batch.df.columns) == list(COLUMNS)
    assert batch.summary().calls == 0


BAD_OPTIONS = [
    ({"repeat": 0}, ValueError, "repeat must be >= 1"),
    ({"repeat": 1.5}, TypeError, "repeat must be an int"),
    ({"rate": -1}, ValueError, "rate must be a positive"),
    ({"rate": 0}, ValueError, "rate must be a positive"),
    ({"rate": float("inf")}, ValueError, "rate must be a positive"),
    ({"concurrency": 0}, ValueError, "concurrency must be >= 1"),
    ({"env": {"K": 1}}, TypeError, "env value of 'K' must be str"),
    ({"env": {1: "v"}}, TypeError, "env names must be str"),
    ({"keep_data": "yes"}, TypeError, "keep_data"),
    ({"progress": "sometimes"}, ValueError, "progress must be"),
]

BAD_INPUTS = [
    ([b"ok", 42], TypeError, "input 1 is int"),
    ([b"ok", None], TypeError, "input 1 is NoneType"),
    ([(b"x", {"K": 2})], TypeError, "input 0: env value of 'K' must be str"),
    ([(b"x", {"K": "v"}, 3)], TypeError, "a pair is"),
    ([(b"x", "K=v")], TypeError, "env must be a mapping"),
    ("abc", TypeError, "not str"),
    (b"abc", TypeError, "not bytes"),
    (42, TypeError, "not int"),
]


def test_bad_arguments_raise_before_any_call(echo_pool: Pool) -> None:
    for kwargs, error, match in BAD_OPTIONS:
        with pytest.raises(error, match=match):
            echo_pool.map([b"a", b"b"], **kwargs)
    for inputs, error, match in BAD_INPUTS:
        with pytest.raises(error, match=match):
            echo_pool.map(inputs)
    assert echo_pool.snapshot().calls == 0
    assert echo_pool.last_batch is None


def test_inputs_are_materialised_before_the_first_call(echo_pool: Pool) -> None:
    def gen():
        yield b"fine"
        yield b"fine"
        yield 3.5  # discovered only by iterating: still before any call

    with pytest.raises(TypeError, match="input 2 is float"):
        echo_pool.map(gen())
    assert echo_pool.snapshot().calls == 0
