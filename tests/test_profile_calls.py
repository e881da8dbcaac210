"""Profiling chosen calls: the SDK's sampler through FNRUN_NB_PROFILE, py-spy by pid,
``batch.slowest``, ``map(profile=True)``, ``profile_rows`` and ``Profile``.

``hot_parts.py`` (SDK) and ``hot_parts_raw.py`` (the protocol by hand) spend a call's
time in ``slow_part()`` or ``fast_part()`` by input; the work is counted in loop
turns, so which function holds the samples does not depend on the machine's load.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import textwrap
import zlib
from pathlib import Path

import pandas as pd
import psutil
import pytest
from _procs import interrupt_when_ready
from conftest import TEST_HANDLERS

from fnrun_nb import Batch, HandlerStartError, Pool, Profile, ProfilerUnavailable
from fnrun_nb._sampler import MAX_PAYLOAD, OTHER_FRAME, decode_payload, encode_payload
from fnrun_nb.batch import _pyspy

HOT = [sys.executable, str(TEST_HANDLERS / "hot_parts.py")]
RAW = [sys.executable, str(TEST_HANDLERS / "hot_parts_raw.py")]
INPUTS = [b"slow", b"fast"] * 3
_COLLAPSED_LINE = re.compile(r"(?:[^;\n]+ \([^\n]*:\d+\))(?:;[^;\n]+ \([^\n]*:\d+\))* \d+")


def _functions(profile: Profile) -> list[str]:
    return profile.top(None)["function"].tolist()


@pytest.fixture
def hot_batch():
    with Pool(HOT, workers=2) as pool:
        pool.map([b"echo"] * 4, progress=False)  # warm: no row below is a first call
        batch = pool.map(INPUTS, env={"K": "v"}, progress=False)
        yield pool, batch


def _rows_of(batch, name: bytes) -> list[int]:
    df = batch.df
    return df.index[[batch.inputs[i] == name for i in df["input_index"]]].tolist()


# --- the SDK's own profile -------------------------------------------------------------


def test_slowest_is_the_ok_rows_with_the_highest_metric(hot_batch) -> None:
    pool, batch = hot_batch
    # slow_part against an echo: hundreds of times the work, an order no load upsets.
    mixed = pool.map([b"slow", b"echo", b"crash"] * 2, progress=False)
    rows = mixed.slowest(2)
    assert list(rows.columns) == list(mixed.df.columns)
    assert sorted(rows.index) == [0, 3]
    assert rows["service_ms"].is_monotonic_decreasing
    assert sorted(mixed.slowest(100).index) == [0, 1, 3, 4]  # ok rows only
    assert batch.slowest(1, metric="bytes_in").index.tolist() == [0]  # ties keep row order
    with pytest.raises(KeyError, match="no column 'nope'"):
        batch.slowest(2, metric="nope")
    with pytest.raises(ValueError, match="n must be >= 0"):
        batch.slowest(-1)


def test_profile_rows_of_the_slow_rows_blames_slow_part_and_of_the_fast_ones_fast_part(
    hot_batch,
) -> None:
    pool, batch = hot_batch
    before = pool.last_batch
    slow = batch.profile_rows(batch.df.loc[_rows_of(batch, b"slow")])
    assert pool.last_batch is before  # the profiling run is not the user's batch
    assert slow.profiler == "sdk" and slow.calls == 3 and slow.no_profile == 0
    top = slow.top()
    assert list(top.columns) == ["function", "file", "line", "self_pct", "total_pct", "samples"]
    assert top["function"].iloc[0] == "slow_part"
    assert "fast_part" not in _functions(slow)
    first = top.iloc[0]
    source = (TEST_HANDLERS / "hot_parts.py").read_text().splitlines()
    assert first["file"] == str(TEST_HANDLERS / "hot_parts.py")
    assert source[first["line"] - 1].startswith("def slow_part(")  # its definition line
    assert first["self_pct"] > 50 and top["self_pct"].is_monotonic_decreasing
    # The SDK's loop is not a frame of any stack: the handler function is the root.
    assert {stack[0].split(" ")[0] for stack in slow.stacks} == {"handle"}
    # Nor is any frame of the SDK's serve loop below it.  What the handler itself calls
    # is its own time and may show: a sample can land in the Result it builds
    # (fnrun_nb/values.py), rarely, as a 40 ms call spends microseconds there.
    assert not any(Path(f).parts[-2:] == ("fnrun_nb", "handler.py") for f in slow.top(None)["file"])
    assert slow.by_call is not None and sorted(slow.by_call) == [0, 2, 4]
    assert all(p.calls == 1 for p in slow.by_call.values())

    fast = batch.profile_rows(batch.df["input_index"] % 2 == 1, times=3)
    assert fast.calls == 9
    assert _functions(fast)[0] == "fast_part"
    assert "slow_part" not in _functions(fast)


def test_saved_speedscope_and_collapsed_stacks_load(hot_batch, tmp_path: Path) -> None:
    _, batch = hot_batch
    profile = batch.profile_rows([0])
    doc = json.loads(profile.save(tmp_path / "p.speedscope.json").read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert "slow_part" in names and "handle" in names
    [prof] = doc["profiles"]
    assert prof["type"] == "sampled" and len(prof["samples"]) == len(prof["weights"])
    assert sum(prof["weights"]) == profile.samples == prof["endValue"]
    assert all(0 <= i < len(names) for s in prof["samples"] for i in s)

    text = profile.save(tmp_path / "p.txt", format="collapsed").read_text()
    lines = text.splitlines()
    assert lines and all(_COLLAPSED_LINE.fullmatch(line) for line in lines), lines
    again = Profile.from_collapsed(text, calls=1, profiler="sdk")
    assert dict(again.stacks) == dict(profile.stacks)
    with pytest.raises(ValueError, match="format must be 'speedscope' or 'collapsed'"):
        profile.save(tmp_path / "p.svg", format="svg")


def test_flamegraph_is_svg_in_a_notebook_and_a_text_tree_elsewhere(
    hot_batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, batch = hot_batch
    monkeypatch.chdir(TEST_HANDLERS.parent)
    profile = batch.profile_rows([0, 2])
    graph = profile.flamegraph()
    svg = graph.svg()
    assert svg.startswith("<svg xmlns=") and svg.endswith("</svg>")
    assert "slow_part" in svg and "<script" not in svg and "http" not in svg.split(">", 1)[1]
    assert svg in graph._repr_html_()
    assert profile.flamegraph().svg(title=False) in profile._repr_html_()
    tree = str(graph).splitlines()
    assert tree[0].startswith("Profile of 2 calls (sdk): ")
    rows = [line for line in tree[2:] if "slow_part" in line]
    assert len(rows) == 1 and rows[0].split()[0] != "0.0%"
    # Displays show a file under the working directory relative to it; top() in full.
    assert "slow_part (handlers/hot_parts.py:" in rows[0]
    assert "(handlers/hot_parts.py:" in svg and str(TEST_HANDLERS) not in svg
    assert profile.top()["file"].iloc[0] == str(TEST_HANDLERS / "hot_parts.py")


def test_map_profile_keeps_the_key_out_of_env_in_and_changes_no_outcome() -> None:
    inputs = [b"slow", b"crash", b"fast", b"raise", b"echo"]
    with Pool(HOT, workers=2) as pool:
        plain = pool.map(inputs, env={"K": "v"}, progress=False)
        batch = pool.map(inputs, env={"K": "v"}, profile=True, progress=False)
    df = batch.df
    assert df["outcome"].tolist() == plain.df["outcome"].tolist() == [
        "ok", "crashed", "ok", "ok", "ok"]
    assert df["data"].tolist() == plain.df["data"].tolist()
    assert df["status"].tolist() == plain.df["status"].tolist()
    # Neither the request nor the answer is in the recorded envs; the handler's
    # ctx.env (echoed as its env) never saw the request.
    assert all(e == {"K": "v"} for e in df["env_in"])
    assert df["env"].iloc[0] == {"K": "v"} and df["env"].iloc[1] == {}
    assert "profile" in df.columns and "profile" not in plain.df.columns
    assert df["profile"].iloc[1] is None and df["profile"].iloc[0]
    profile = batch.profile
    assert profile is not None and plain.profile is None
    assert (profile.calls, profile.failed, profile.no_profile) == (4, 1, 0)
    assert "4 calls" in repr(profile) and "1 failed" in repr(profile)
    assert _functions(profile)[0] == "slow_part"  # 10x the turns of fast_part
    # The call that raised (status 500) has its profile too.
    assert df["status"].iloc[3] == 500 and 3 in profile.by_call
    assert batch.config["profile"] is True and batch.config["profiler"] == "auto"


def test_a_handler_that_ignores_the_key_returns_no_profile() -> None:
    with Pool(RAW, workers=1) as pool:
        batch = pool.map([b"fast", b"echo"], profile=True, progress=False)
    assert (batch.df["outcome"] == "ok").all()
    profile = batch.profile
    assert profile is not None
    assert (profile.calls, profile.no_profile, profile.samples) == (0, 2, 0)
    assert "2 calls returned no profile" in repr(profile)
    assert profile.top().empty
    assert "(no samples)" in str(profile.flamegraph())


def test_the_payload_is_capped_and_keeps_its_sample_count() -> None:
    stacks = {";".join(f"f{i}_{j} (/very/long/path/module_{i}.py:{j})" for j in range(30)): i + 1
              for i in range(3000)}
    payload = encode_payload(stacks, 0.001)
    assert len(payload) <= MAX_PAYLOAD
    back, interval = decode_payload(payload)
    assert interval == 0.001
    assert sum(back.values()) == sum(stacks.values())
    assert OTHER_FRAME in back and len(back) < len(stacks)
    # The most sampled stacks are the ones kept.
    assert max(stacks, key=stacks.__getitem__) in back
    with pytest.raises(ValueError, match="not a call profile"):
        decode_payload("bm90IGEgcHJvZmlsZQ==")


def test_bad_arguments_are_named_before_any_call(hot_batch) -> None:
    pool, batch = hot_batch
    with pytest.raises(ValueError, match="times must be an int >= 1"):
        batch.profile_rows([0], times=0)
    with pytest.raises(KeyError, match="not in this batch"):
        batch.profile_rows([99])
    with pytest.raises(TypeError, match="rows must be rows of batch.df"):
        batch.profile_rows(0)
    with pytest.raises(ValueError, match="perf is not supported"):
        Pool(HOT, workers=1, profiler="perf")
    with pytest.raises(ValueError, match="py-spy option '--idle'"):
        Pool(HOT, workers=1, profiler="py-spy --idle")
    with pytest.raises(ValueError, match="pass pool= or command=, not both"):
        batch.profile_rows([0], pool=pool, command=HOT)
    with pytest.raises(ValueError, match="perf is not supported"):
        # A bad setting is named before any process starts, on a new pool too.
        type(batch).from_frame(batch.df.copy(), inputs=batch.inputs, command=HOT).profile_rows(
            [0], profiler="perf")
    gone = type(batch).from_frame(batch.df.copy(), inputs=batch.inputs,
                                  command=["/nonexistent/handler-binary"])
    with pytest.raises(HandlerStartError, match="pass command= to profile_rows"):
        gone.profile_rows([0])  # a saved command that cannot start at all
    with pytest.raises(HandlerStartError, match="No such file or directory"):
        batch.profile_rows([0], command=["/nonexistent/handler-binary"])
    nameless = type(batch).from_frame(batch.df.copy(), inputs=batch.inputs)
    with pytest.raises(ValueError, match="names no handler command: pass command="):
        nameless.profile_rows([0])


def _handler_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() != "py-spy"]


def test_profile_rows_on_a_closed_pool_starts_a_warm_one_of_the_same_command(
    tmp_path: Path,
) -> None:
    # The handler reads its process env and cwd: the new pool starts it as the batch's
    # did, or the rows fail (and nothing would be profiled).
    handler = tmp_path / "needs_env.py"
    handler.write_text(textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(TEST_HANDLERS)!r})
        import hot_parts
        from fnrun_nb.handler import serve
        from fnrun_nb.values import Result

        def handle(data, ctx):
            if os.environ.get("WANTED") != "yes" or not os.path.exists("marker"):
                return Result(status=500, data=b"started without the batch's env or cwd")
            return hot_parts.handle(data, ctx)

        if __name__ == "__main__":
            serve(handle)
        """
    ))
    (tmp_path / "marker").write_text("")
    with Pool([sys.executable, str(handler)], workers=1, cwd=tmp_path,
              process_env={"PATH": os.environ["PATH"], "WANTED": "yes"}) as pool:
        batch = pool.map([b"slow", b"fast"], env={"K": "v"}, progress=False)
    assert batch.df["status"].tolist() == [200, 200]
    assert batch._ran_on() is pool and pool.closed
    profile = batch.profile_rows(batch.slowest(1))
    assert _functions(profile)[0] == "slow_part" and profile.calls == 1
    assert profile.failed == 0 and profile.by_call is not None and sorted(profile.by_call) == [0]
    assert pool.last_batch is batch
    assert _handler_processes() == []  # the new pool is closed


def test_profile_rows_of_a_batch_loaded_from_disk(tmp_path: Path) -> None:
    with Pool(HOT, workers=2) as pool:
        batch = pool.map(INPUTS, env={"K": "v"}, progress=False)
    path = batch.save(tmp_path / "b.parquet")
    del batch, pool
    loaded = Batch.load(path)
    assert loaded._ran_on() is None
    slow = loaded.profile_rows(loaded.df.loc[_rows_of(loaded, b"slow")])
    assert slow.profiler == "sdk" and slow.calls == 3 and slow.failed == 0
    top = slow.top()
    assert top["function"].iloc[0] == "slow_part" and "fast_part" not in _functions(slow)
    assert top["file"].iloc[0] == str(TEST_HANDLERS / "hot_parts.py")
    assert slow.by_call is not None and sorted(slow.by_call) == [0, 2, 4]
    fast = loaded.profile_rows(loaded.df.loc[_rows_of(loaded, b"fast")], times=3,
                               warmup=False)
    assert fast.calls == 9 and _functions(fast)[0] == "fast_part"
    assert "slow_part" not in _functions(fast)
    assert _handler_processes() == []


def test_profile_rows_with_command_after_the_handler_moved(tmp_path: Path) -> None:
    old = tmp_path / "old" / "hot_parts.py"
    old.parent.mkdir()
    old.write_text((TEST_HANDLERS / "hot_parts.py").read_text())
    with Pool([sys.executable, str(old)], workers=1) as pool:
        batch = pool.map(INPUTS, progress=False)
    path = batch.save(tmp_path / "b.parquet")
    moved = tmp_path / "new" / "hot_parts.py"
    moved.parent.mkdir()
    old.rename(moved)
    loaded = type(batch).load(path)
    with pytest.raises(HandlerStartError, match="pass command= to profile_rows"):
        loaded.profile_rows([0])
    profile = loaded.profile_rows([0, 2], command=[sys.executable, str(moved)])
    assert profile.calls == 2 and profile.failed == 0
    assert profile.top()["function"].iloc[0] == "slow_part"
    assert profile.top()["file"].iloc[0] == str(moved)
    # A shell-like string works as replay's does; and on a batch whose pool is open.
    with Pool([sys.executable, str(moved)], workers=1) as pool:
        live = pool.map(INPUTS, progress=False)
        again = live.profile_rows([2], command=f"{sys.executable} {moved}")
        assert pool.last_batch is live
    assert _functions(again)[0] == "slow_part" and again.calls == 1
    assert _handler_processes() == []


def test_profile_rows_of_a_batch_saved_without_inputs_says_so(tmp_path: Path) -> None:
    with Pool(HOT, workers=1) as pool:
        batch = pool.map([b"slow", b"fast"], progress=False)
    loaded = type(batch).load(batch.save(tmp_path / "b.parquet", inputs=False))
    assert loaded.inputs is None
    with pytest.raises(ValueError, match=r"this batch has no inputs \(saved with inputs=False\?\)"):
        loaded.profile_rows([0])
    with pytest.raises(ValueError, match="this batch has no inputs"):
        loaded.profile_rows([0], command=HOT)
    assert _handler_processes() == []


def test_profile_rows_of_a_replay_batch(tmp_path: Path) -> None:
    with Pool(HOT, workers=1) as pool:
        batch = pool.map([b"slow", b"crash", b"fast"], progress=False)
    replayed = batch.replay([1, 0], times=1)
    attempts = replayed.batch
    ran_on = attempts._ran_on()
    assert ran_on is None or ran_on.closed  # replay's own pool: closed, maybe collected
    ok = attempts.df.index[attempts.df["outcome"] == "ok"].tolist()
    profile = attempts.profile_rows(ok)
    assert profile.calls == 1 and _functions(profile)[0] == "slow_part"
    assert _handler_processes() == []


def test_profile_rows_of_a_batch_whose_forensics_pool_is_closed() -> None:
    # Replay's pool (a HandlerPool, below the front layer) kept alive but closed: the
    # rows run on a new pool of the same target.
    from fnrun_nb.batch import run_batch
    from fnrun_nb.batch.forensics.target import Target

    with Target.of(HOT, timeout=30.0).start(1) as handler_pool:
        batch = run_batch(handler_pool, [b"fast", b"slow"], progress=False)
    assert batch._ran_on() is handler_pool and handler_pool.closed
    profile = batch.profile_rows([1])
    assert profile.calls == 1 and _functions(profile)[0] == "slow_part"
    assert handler_pool.last_batch is batch
    assert _handler_processes() == []


# --- py-spy, for a Python handler without the SDK ---------------------------------------


def test_py_spy_profiles_a_handler_that_speaks_the_protocol_by_hand() -> None:
    with Pool(RAW, workers=2, profiler="py-spy") as pool:
        batch = pool.map(INPUTS, env={"K": "v"}, progress=False)
        slow = batch.profile_rows([0, 2, 4])
        fast = batch.profile_rows([1, 3, 5], times=10)
        # --gil: only samples holding the GIL, so none of the handler's waits in read.
        fast_gil = batch.profile_rows([1, 3, 5], times=10, profiler="py-spy --gil")
        profiled = pool.map([b"fast", b"echo"], profile=True, progress=False)
    assert slow.profiler == "py-spy" and slow.calls == 3 and slow.by_call is None
    assert slow.samples > 0
    assert _functions(slow)[0] == "slow_part" and "fast_part" not in _functions(slow)
    assert "fast_part" in _functions(fast) and "slow_part" not in _functions(fast)
    assert _functions(fast_gil)[0] == "fast_part" and "slow_part" not in _functions(fast_gil)
    # py-spy never sends the key: the handler echoes the env it got.
    assert all(e == {} for e in profiled.df["env"]) and "profile" not in profiled.df.columns
    assert profiled.profile is not None and profiled.profile.profiler == "py-spy"
    # Every py-spy has ended.
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "py-spy"]


def test_py_spy_profiles_a_loaded_batch_on_a_new_pool(tmp_path: Path) -> None:
    # No SDK in the handler: the batch's profiler setting (py-spy) is kept, and py-spy
    # attaches to the new pool's worker by pid.
    with Pool(RAW, workers=2, profiler="py-spy") as pool:
        batch = pool.map(INPUTS, progress=False)
    loaded = Batch.load(batch.save(tmp_path / "b.parquet"))
    slow = loaded.profile_rows([0, 2, 4])
    assert slow.profiler == "py-spy" and slow.calls == 3 and slow.samples > 0
    assert _functions(slow)[0] == "slow_part" and "fast_part" not in _functions(slow)
    # An explicit profiler wins over the recorded one.
    fast = loaded.profile_rows([1, 3, 5], times=10, profiler="py-spy --gil")
    assert _functions(fast)[0] == "fast_part" and "slow_part" not in _functions(fast)
    assert not [p for p in psutil.Process().children(recursive=True)]


def test_py_spy_says_exactly_what_is_missing_when_ptrace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nCapEff:\t00000000a80425fb\n")  # no bit 19
    scope = tmp_path / "ptrace_scope"
    scope.write_text("1\n")
    monkeypatch.setattr(_pyspy, "PROC_STATUS", str(status))
    monkeypatch.setattr(_pyspy, "YAMA_SCOPE", str(scope))
    expected = (
        "py-spy cannot attach to the handler processes: attaching to another process "
        "needs CAP_SYS_PTRACE, which this process has not got, or "
        "kernel.yama.ptrace_scope 0, which is 1.  Run with the capability (as "
        "root, or docker run --cap-add SYS_PTRACE), or set it with "
        "`sysctl kernel.yama.ptrace_scope=0`; handlers written with fnrun_nb.handler "
        "are profiled without it (profiler='auto')."
    )
    with Pool(RAW, workers=1, profiler="py-spy") as pool:
        batch = pool.map([b"slow"], progress=False)
        with pytest.raises(ProfilerUnavailable) as info:
            batch.profile_rows([0])
        assert str(info.value) == expected
        with pytest.raises(ProfilerUnavailable):
            pool.map([b"fast"], profile=True, progress=False)
        assert pool.invoke(b"fast").data == b"fast_part"  # the pool is unharmed
    # On a new pool (the batch's is closed): the same error, no process left behind.
    with pytest.raises(ProfilerUnavailable) as info:
        batch.profile_rows([0])
    assert str(info.value) == expected
    assert not psutil.Process().children(recursive=True)
    # Scope 0, or the capability, is enough.
    scope.write_text("0\n")
    _pyspy.check_ptrace()
    scope.write_text("2\n")
    status.write_text("CapEff:\t00000000a80c25fb\n")  # bit 19 set
    _pyspy.check_ptrace()


def test_py_spy_cannot_read_a_process_that_is_not_python(tmp_path: Path) -> None:
    # A process py-spy cannot read (not CPython): a clear error, nothing left running.
    proc = psutil.Popen(["sleep", "30"])
    try:
        with pytest.raises(ProfilerUnavailable, match=f"process {proc.pid}"):
            _pyspy.PySpy([proc.pid], (), "sleep 30")
    finally:
        proc.kill()
        proc.wait()
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "py-spy"]


def test_top_counts_recursion_once_per_sample() -> None:
    profile = Profile({("a (f.py:1)", "b (f.py:5)", "a (f.py:1)"): 3, ("a (f.py:1)",): 1}, calls=1)
    top = profile.top().set_index("function")
    assert top.loc["a", "samples"] == 4 and top.loc["a", "total_pct"] == 100.0
    assert top.loc["a", "self_pct"] == 100.0 and top.loc["b", "self_pct"] == 0.0
    assert isinstance(top, pd.DataFrame)


def test_a_saved_batch_keeps_its_profile(tmp_path: Path) -> None:
    with Pool(HOT, workers=1) as pool:
        batch = pool.map([b"slow", b"fast"], profile=True, progress=False)
    back = type(batch).load(batch.save(tmp_path / "b.parquet"))
    assert back.profile is not None and batch.profile is not None
    assert dict(back.profile.stacks) == dict(batch.profile.stacks)
    assert back.profile.calls == 2 and sorted(back.profile.by_call or {}) == [0, 1]


CTRL_C_CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    import psutil
    from fnrun_nb import Pool

    pool = Pool(sys.argv[1:], workers=2, timeout=60, profiler="py-spy")
    pool.invoke(b"fast")

    def announce():
        while True:
            b = pool.active_batch
            if b is not None and b.progress().done >= 2:
                time.sleep(0.3)  # the sleeping calls are in flight now
                print("READY", flush=True)
                return
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.map([b"slow", b"fast", b"sleep", b"sleep", b"fast"], profile=True, progress=False)
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    df = pool.last_batch.df
    report["outcomes"] = df["outcome"].astype(str).tolist()
    report["spies"] = [p.name() for p in psutil.Process().children(recursive=True)
                       if p.name() == "py-spy"]
    report["after"] = pool.invoke(b"fast").data.decode()
    pool.close()
    report["children"] = len(psutil.Process().children(recursive=True))
    print(json.dumps(report), flush=True)
    """
)


def test_ctrl_c_during_a_py_spy_batch_leaves_no_py_spy_and_keeps_the_rows() -> None:
    report, err, _ = interrupt_when_ready(CTRL_C_CHILD, *RAW, timeout=60)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["outcomes"][:2] == ["ok", "ok"]
    assert report["outcomes"][2:] == ["cancelled"] * 3
    assert report["spies"] == [] and report["children"] == 0
    assert report["after"] == "fast_part"


def test_a_payload_that_is_not_a_profile_counts_as_none() -> None:
    bomb = base64.b64encode(zlib.compress(b"fnrun-profile 1 1 2000\n" + b"a" * (20 << 20)))
    profile = Profile.from_payloads(
        [(0, "garbage!"), (1, None), (2, bomb.decode()), (3, "")]
    )
    assert (profile.calls, profile.no_profile, profile.samples) == (0, 4, 0)
    with pytest.raises(ValueError, match="inflates to more than"):
        decode_payload(bomb.decode())


def test_profiles_are_recorded_when_one_thread_drives_many_calls() -> None:
    # More calls in flight than CPUs: the batch may be driven by one I/O thread (_mux);
    # the profile column and the envs are the same either way.
    n = (os.cpu_count() or 2) + 1
    with Pool(HOT, workers=n) as pool:
        batch = pool.map([b"slow", b"fast"] * n, concurrency=n, profile=True, progress=False)
    df = batch.df
    assert (df["outcome"] == "ok").all() and df["profile"].notna().all()
    assert all(e == {} for e in df["env"]) and all(e == {} for e in df["env_in"])
    assert batch.profile is not None and batch.profile.calls == 2 * n
