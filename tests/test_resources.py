"""Per-call resource columns, the handler's own time and recycling by memory, on real
handler processes (``handlers/profiled.py`` has a known cost per call).

Timings hold on a busy 2-core machine: each assertion is a relationship with a wide
margin (a busy loop's CPU time against a sleep's), never a tight figure.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fnrun_nb import Pool
from fnrun_nb._resources import cpu_clock_id, open_meter
from fnrun_nb.batch import COLUMNS, OPTIONAL_COLUMNS
from fnrun_nb.batch.inputs import plan_batch
from fnrun_nb.protocol import HANDLER_NS_KEY, TIMING_KEY
from fnrun_nb.settings import DEFAULTS, PoolSettings

from _schema import assert_schema

HERE = Path(__file__).resolve().parent
PROFILED = str(HERE / "handlers" / "profiled.py")
TIMING_COLUMNS = ("handler_ms", "transport_ms")
RESOURCE_COLUMNS = ("cpu_ms", "rss_mib", "peak_rss_mib")
NEW = (*TIMING_COLUMNS, *RESOURCE_COLUMNS)


# --- the reader -------------------------------------------------------------------------


def test_the_cpu_clock_of_another_process_counts_its_cpu_time() -> None:
    # A child that spins for a while, then sleeps: its clock advances, then stops.
    code = "import time\nend = time.thread_time() + 0.3\nwhile time.thread_time() < end: pass\ntime.sleep(30)"
    import sys

    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        meter = open_meter(child.pid)
        assert meter is not None
        try:
            deadline = time.monotonic() + 20
            while meter.cpu_ns() < 300_000_000 and time.monotonic() < deadline:
                time.sleep(0.05)
            spent = meter.cpu_ns()
            assert spent >= 300_000_000
            rss, peak = meter.memory()
            assert 0 < rss <= peak
            assert 0 < meter.rss() < 1 << 34
            assert time.clock_gettime_ns(cpu_clock_id(child.pid)) >= spent
        finally:
            meter.close()
            meter.close()  # idempotent
    finally:
        child.kill()
        child.wait()


def test_no_meter_for_a_process_that_is_not_there() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert open_meter(child.pid) is None
    assert open_meter(0) is None


# --- off by default ----------------------------------------------------------------------


def test_the_new_columns_are_optional_float64_in_the_schema() -> None:
    for name in NEW:
        assert name not in COLUMNS
        assert OPTIONAL_COLUMNS[name] == "float64"


def test_off_by_default_the_columns_are_absent() -> None:
    assert (DEFAULTS.resources, DEFAULTS.handler_timing, DEFAULTS.max_rss_mib) == (
        False, False, None,
    )
    with Pool(PROFILED, workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"b"], progress=False)
    assert not set(NEW) & set(batch.df.columns)
    assert_schema(batch.df)
    assert "service  handler" not in str(batch.summary())
    assert batch.summary().resources is None and "process  cpu" not in str(batch.summary())
    assert batch.config["resources"] is False and batch.config["handler_timing"] is False


def test_bad_flags_raise_before_any_call() -> None:
    for name in ("resources", "handler_timing"):
        with pytest.raises(TypeError, match=name):
            plan_batch([b"a"], env=None, repeat=1, concurrency=None, rate=None,
                       keep_data=True, progress=False, workers=1, **{name: "yes"})
    with pytest.raises(ValueError, match="max_rss_mib"):
        Pool(PROFILED, workers=1, max_rss_mib=0)


# --- resources ---------------------------------------------------------------------------


def test_cpu_ms_tells_a_busy_loop_from_a_sleep() -> None:
    ms = 200
    with Pool(PROFILED, workers=1, timeout=30, resources=True) as pool:
        assert pool.settings.resources is True
        batch = pool.map([f"busy:{ms}", f"sleep:{ms}"], repeat=2, concurrency=1, progress=False)
    df = batch.df
    assert_schema(df)
    assert set(RESOURCE_COLUMNS) <= set(df.columns)
    assert not set(TIMING_COLUMNS) & set(df.columns)
    assert batch.config["resources"] is True
    busy = df[df["input_index"] == 0]
    sleep = df[df["input_index"] == 1]
    # The busy loop spins on the handler's own thread CPU clock: the process spent at
    # least that, and no more than the call lasted (plus clock granularity).
    assert (busy["cpu_ms"] >= 0.95 * ms).all(), busy["cpu_ms"].tolist()
    assert (busy["cpu_ms"] <= busy["service_ms"] + 5).all()
    # A sleeping handler spends next to nothing, whatever the machine's load.
    assert (sleep["cpu_ms"] < 0.25 * ms).all(), sleep["cpu_ms"].tolist()
    assert (sleep["cpu_ms"] >= 0).all()
    assert (df["rss_mib"] > 1).all() and (df["peak_rss_mib"] >= df["rss_mib"]).all()
    # The summary's process line: medians over the ok calls, the highest peak.
    used = batch.summary().resources
    assert used is not None
    assert used["cpu_ms"] == pytest.approx(df["cpu_ms"].median())
    assert used["rss_mib"] == pytest.approx(df["rss_mib"].median())
    assert used["peak_rss_mib"] == pytest.approx(df["peak_rss_mib"].max())
    assert "process  cpu " in str(batch.summary())


def test_rss_grows_by_what_the_handler_keeps() -> None:
    kib = 4096
    with Pool(PROFILED, workers=1, timeout=30) as pool:
        batch = pool.map([f"leak:{kib}"] * 6, concurrency=1, resources=True, progress=False)
    df = batch.df
    assert (df["pid"] == df["pid"].iloc[0]).all()
    growth = np.diff(df["rss_mib"].to_numpy())
    assert ((growth > 0.75 * kib / 1024) & (growth < 1.5 * kib / 1024)).all(), growth
    peak = df["peak_rss_mib"].to_numpy()
    assert (np.diff(peak) >= 0).all() and (peak >= df["rss_mib"].to_numpy()).all()


def test_a_failed_call_has_no_readings() -> None:
    with Pool(PROFILED, workers=1, timeout=30) as pool:
        batch = pool.map([b"a", b"crash", b"b"], concurrency=1, resources=True,
                         handler_timing=True, progress=False)
    df = batch.df
    assert df["outcome"].tolist() == ["ok", "crashed", "ok"]
    assert df.loc[1, list(NEW)].isna().all()
    assert df.loc[[0, 2], list(NEW)].notna().all().all()
    assert_schema(df)


# --- handler timing ----------------------------------------------------------------------


def test_handler_ms_is_the_handlers_own_time() -> None:
    ms = 100
    with Pool(PROFILED, workers=2, timeout=30, handler_timing=True) as pool:
        # A process's first call includes its start-up (the host writes the call while
        # the interpreter still imports): warm both workers first.
        warm = pool.map(["sleep:50"] * 4, progress=False)  # long enough to overlap
        batch = pool.map([f"sleep:{ms}"] * 4, env={"K": "v"}, progress=False)
    assert warm.df["pid"].nunique() == 2
    df = batch.df
    assert (df["call_on_worker"] > 1).all()
    assert_schema(df)
    assert set(TIMING_COLUMNS) <= set(df.columns)
    assert not set(RESOURCE_COLUMNS) & set(df.columns)
    assert (df["handler_ms"] >= ms).all() and (df["handler_ms"] < ms + 100).all()
    # The rest of the service time is the pipes, the scheduler and the host's side:
    # positive, and small next to the sleep.
    # (The median: on a busy machine one call's scheduling delay can be anything.)
    assert (df["transport_ms"] > 0).all() and df["transport_ms"].median() < 0.5 * ms
    np.testing.assert_allclose(df["handler_ms"] + df["transport_ms"], df["service_ms"])
    # The request and the answer stay out of what the user sent and got: the handler
    # echoes the env it saw, which the SDK cleaned of the request.
    assert df["env_in"].tolist() == [{"K": "v"}] * 4
    assert df["env"].tolist() == [{"K": "v"}] * 4
    split = batch.summary().handler_split
    assert split is not None and split["calls"] == 4
    assert ms <= split["handler"] < ms + 100
    assert "service  handler" in str(batch.summary())


def test_the_timing_request_reaches_the_handler_only_through_the_sdk() -> None:
    # Without handler_timing, a user env of the same name is the user's own business.
    with Pool(PROFILED, workers=1, timeout=10) as pool:
        plain = pool.map([b"x"], env={"A": "1"}, progress=False).df
        timed = pool.map([b"x"], env={"A": "1"}, handler_timing=True, progress=False).df
    assert plain["env"][0] == {"A": "1"}
    assert timed["env"][0] == {"A": "1"}  # neither TIMING nor HANDLER_NS
    assert TIMING_KEY not in timed["env_in"][0] and HANDLER_NS_KEY not in timed["env"][0]




def test_a_handler_that_does_not_report_its_time_has_nan(c_echo: str) -> None:
    with Pool(c_echo, workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"b"], handler_timing=True, resources=True, progress=False)
    df = batch.df
    assert df["outcome"].tolist() == ["ok", "ok"]
    assert df["handler_ms"].isna().all() and df["transport_ms"].isna().all()
    assert df["cpu_ms"].notna().all() and (df["rss_mib"] > 0).all()
    assert HANDLER_NS_KEY not in df["env"][0]
    split = batch.summary().handler_split
    assert split is not None and split["calls"] == 0 and math.isnan(split["handler"])


# --- recycling by memory -----------------------------------------------------------------


def _base_rss(pool_kwargs: dict[str, object]) -> float:
    with Pool(PROFILED, workers=1, timeout=30, **pool_kwargs) as pool:  # type: ignore[arg-type]
        return float(pool.map([b"x"], resources=True, progress=False).df["rss_mib"][0])


@pytest.mark.parametrize("resources", [True, False])
def test_max_rss_mib_recycles_the_leaking_worker_after_its_call(resources: bool) -> None:
    step_mib = 4
    limit = _base_rss({}) + 5 * step_mib + 1
    with Pool(PROFILED, workers=1, timeout=30, max_rss_mib=limit) as pool:
        batch = pool.map([f"leak:{step_mib * 1024}"] * 16, concurrency=1,
                         resources=resources, progress=False)
        snap = pool.snapshot()
    df = batch.df
    # Recycling is never a failed call.
    assert (df["outcome"] == "ok").all()
    generations = df["generation"].astype(int)
    assert generations.max() >= 2
    assert snap.replacements >= 2 and snap.failures == 0
    by = batch.by_worker()
    assert int(by["failures"].sum()) == 0 and int(by["replacements"].sum()) >= 2
    # Each process served the same number of calls, the first to go over the limit
    # being its last.
    per_process = df.groupby("generation")["call_on_worker"].max()
    assert per_process.iloc[0] >= 5
    if resources:
        rss = df["rss_mib"]
        # Never beyond the limit by more than one call's growth (plus slack).
        assert rss.max() <= limit + step_mib + 1, rss.tolist()
        last = df.groupby("generation").tail(1)
        full = last[last["generation"] < generations.max()]
        assert (full["rss_mib"] > limit).all()
        assert (df.drop(full.index)["rss_mib"] <= limit).all()
    else:
        assert not set(RESOURCE_COLUMNS) & set(df.columns)


def test_settings_name_the_new_options() -> None:
    names = PoolSettings.names()
    for name in ("max_rss_mib", "resources", "handler_timing"):
        assert name in names
    with Pool(PROFILED, workers=1, timeout=10, max_rss_mib=512, handler_timing=True) as pool:
        assert pool.config.max_rss_mib == 512
        batch = pool.map([b"x"], progress=False)
    assert batch.config["max_rss_mib"] == 512 and batch.config["handler_timing"] is True
    assert "handler_ms" in batch.df.columns


def test_the_columns_survive_a_parquet_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from fnrun_nb.batch import Batch

    with Pool(PROFILED, workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"crash", b"b"], resources=True, handler_timing=True,
                         concurrency=1, progress=False)
    path = batch.save(tmp_path / "b.parquet")
    loaded = Batch.load(path).df
    assert_schema(loaded)
    assert list(loaded.columns) == list(batch.df.columns)
    pd.testing.assert_frame_equal(loaded[list(NEW)], batch.df[list(NEW)])
