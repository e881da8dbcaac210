"""One schema, one registry: every batch's ``df`` has exactly the dtypes of ``COLUMNS``
(and of ``OPTIONAL_COLUMNS`` for the optional columns it has), whatever made it, and
one table (``fnrun_nb.batch.schema.SCHEMA``) is where a column is declared.

Real handler processes throughout (``sleepy``: sleeps the seconds it is given,
``crash`` exits 3).  The Dask shapes are in ``test_schema_dask.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fnrun_nb import Pool
from fnrun_nb.batch import COLUMNS, OPTIONAL_COLUMNS, Batch
from fnrun_nb.batch.schema import SCHEMA, conform, info_field
from fnrun_nb.batch.storage import load_batch, save_frame
from fnrun_nb.magic_views import json_batch
from fnrun_nb.values import CallInfo

from _schema import assert_schema
from conftest import HANDLERS, ROOT, TEST_HANDLERS

SLEEPY = str(TEST_HANDLERS / "sleepy.py")

pytestmark = pytest.mark.timeout(120)


def _interrupted(pool: Pool) -> Batch:
    """A batch stopped by a real SIGINT (Ctrl-C) to this thread: two calls in flight
    are killed, the rest never run."""
    main = threading.get_ident()

    def ctrl_c() -> None:
        while pool.active_batch is None or pool.active_batch.progress().done < 2:
            time.sleep(0.01)
        time.sleep(0.2)  # the two long calls are in flight now
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=ctrl_c)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.map(["0", "0", "30", "30", "0", "0"], progress=False)
    finally:
        sender.join()
    batch = pool.last_batch
    assert batch is not None and batch.interrupted
    return batch


def _cancelled_by_close() -> Batch:
    pool = Pool(SLEEPY, workers=1, timeout=10)
    out: dict[str, Batch] = {}

    def run() -> None:
        out["batch"] = pool.map(["0.2"] * 6, progress=False)

    runner = threading.Thread(target=run)
    runner.start()
    while pool.active_batch is None or pool.active_batch.progress().done < 1:
        time.sleep(0.01)
    pool.close(grace=0.1)
    runner.join(10)
    return out["batch"]


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every shape a local batch record comes in, built once (the pools are closed)."""
    tmp = tmp_path_factory.mktemp("schema")
    out: dict[str, Any] = {}
    with Pool(SLEEPY, workers=2, timeout=10) as pool:
        pool.invoke(b"0")
        out["all ok"] = pool.map(["0"] * 4, progress=False)
        out["some failed"] = pool.map(["0", "crash", "0"], progress=False)
        out["all failed"] = pool.map(["crash"] * 2, progress=False)
        out["empty"] = pool.map([], progress=False)
        out["with a rate, no data kept"] = pool.map(
            ["0"] * 3, rate=200.0, keep_data=False, progress=False
        )
        out["interrupted (Ctrl-C)"] = _interrupted(pool)
    out["cancelled (pool closed)"] = _cancelled_by_close()
    assert set(out["interrupted (Ctrl-C)"].df["outcome"]) == {"ok", "cancelled"}
    assert "cancelled" in set(out["cancelled (pool closed)"].df["outcome"])
    assert set(out["all failed"].df["outcome"]) == {"crashed"}
    for name in ("all ok", "some failed", "all failed", "empty", "interrupted (Ctrl-C)"):
        path = out[name].save(tmp / f"{len(out)}.parquet")
        out[f"loaded from parquet: {name}"] = Batch.load(path)
    out["JsonBatch"] = json_batch(out["some failed"])
    out["JsonBatch, empty"] = json_batch(out["empty"])
    out["Batch.from_frame of pd.concat"] = Batch.from_frame(
        pd.concat([out["all ok"].df, out["some failed"].df], ignore_index=True)
    )
    return out


SHAPES = [
    "all ok", "some failed", "all failed", "empty", "with a rate, no data kept",
    "interrupted (Ctrl-C)", "cancelled (pool closed)",
    "loaded from parquet: all ok", "loaded from parquet: some failed",
    "loaded from parquet: all failed", "loaded from parquet: empty",
    "loaded from parquet: interrupted (Ctrl-C)",
    "JsonBatch", "JsonBatch, empty", "Batch.from_frame of pd.concat",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_batch_has_exactly_the_schema(batches: dict[str, Any], shape: str) -> None:
    assert_schema(batches[shape].df)


CONCATS = [
    ("all ok", "some failed"),
    ("all failed", "all ok"),
    ("empty", "some failed"),
    ("interrupted (Ctrl-C)", "loaded from parquet: some failed"),
]


@pytest.mark.parametrize(("a", "b"), CONCATS)
def test_pd_concat_of_two_records_has_exactly_the_schema(
    batches: dict[str, Any], a: str, b: str
) -> None:
    df = pd.concat([batches[a].df, batches[b].df], ignore_index=True)
    assert_schema(df)
    assert len(df) == len(batches[a]) + len(batches[b])


def test_failure_text_is_str_and_missing_text_is_none(batches: dict[str, Any]) -> None:
    df = batches["some failed"].df
    assert df["error"].tolist()[0] is None and df["error"].tolist()[2] is None
    assert df["error"].iloc[1].startswith("HandlerCrashed")
    assert batches["interrupted (Ctrl-C)"].df["error"].iloc[0] is None


def test_a_file_that_spells_text_another_way_loads_to_the_schema(
    batches: dict[str, Any], tmp_path: Path
) -> None:
    # A file written under another pandas records its own spelling of a text column
    # (pandas 3 writes "str"); the schema's dtype wins on load, values unchanged.
    df = batches["some failed"].df.copy()
    df["error"] = df["error"].astype("string")
    df["stderr_tail"] = df["stderr_tail"].astype("string")
    path = save_frame(df, tmp_path / "other.parquet", {"command": None})
    back = load_batch(path)
    assert_schema(back.df)
    assert back.df["error"].tolist() == batches["some failed"].df["error"].tolist()


def test_from_frame_holds_the_frame_to_the_schema_in_place(batches: dict[str, Any]) -> None:
    source = batches["some failed"].df
    df = source.assign(host="here", note="kept as is")
    df["error"] = df["error"].astype("string")
    df["started"] = df["started"].dt.tz_localize(None)  # a naive time is taken as UTC
    df["worker"] = df["worker"].astype("float64")
    batch = Batch.from_frame(df)
    assert batch.df is df  # the frame is the batch's record, not a copy
    assert_schema(df.drop(columns=["note"]))
    assert df["note"].tolist() == ["kept as is"] * 3
    assert df["error"].tolist() == source["error"].tolist()
    pd.testing.assert_series_equal(df["started"], source["started"])
    pd.testing.assert_series_equal(df["worker"], source["worker"])


def test_a_record_that_cannot_hold_the_schema_is_a_named_error(
    batches: dict[str, Any],
) -> None:
    df = batches["all ok"].df.copy()
    df["outcome"] = df["outcome"].astype(str).replace({"ok": "fine"})
    with pytest.raises(ValueError, match=r"column 'outcome'.*unknown outcome\(s\) fine"):
        Batch.from_frame(df)
    df = batches["all ok"].df.copy()
    df["status"] = 200.5
    with pytest.raises(ValueError, match="column 'status'"):
        conform(df)


# --- the registry ---------------------------------------------------------------------


def test_every_callinfo_field_is_accounted_for_in_the_registry() -> None:
    named = {f for c in SCHEMA for f in re.findall(r"info\.(\w+)", c.source)}
    assert named == set(CallInfo._fields)
    direct = {info_field(c): c.name for c in SCHEMA if info_field(c) is not None}
    assert direct == {
        "wait": "wait_ms", "service": "service_ms", "started": "started", "worker": "worker",
        "pid": "pid", "generation": "generation", "call": "call_on_worker",
    }


def test_callinfo_fields_are_numbers_the_recorder_can_store() -> None:
    # The Recorder stores a CallInfo whole: an int field as an int64, a float field as
    # a float64 (None as a sentinel or NaN); it refuses any other type at import.
    for name, hint in typing.get_type_hints(CallInfo).items():
        assert set(typing.get_args(hint) or (hint,)) <= {int, float, type(None)}, name


def test_registry_lines_are_well_formed() -> None:
    names = [c.name for c in SCHEMA]
    assert len(set(names)) == len(names)
    assert COLUMNS == {c.name: c.dtype for c in SCHEMA if not c.optional}
    assert OPTIONAL_COLUMNS == {
        "handler_ms": "float64", "transport_ms": "float64", "cpu_ms": "float64",
        "rss_mib": "float64", "peak_rss_mib": "float64", "profile": "object",
        "host": "object", "dask_worker": "object",
    }
    sources = re.compile(r"info\.\w+|plan|runner|result|error|dask|resources|derived: .+")
    for c in SCHEMA:
        if c.dtype != "category":  # spelled as str(dtype) prints it
            assert str(pd.api.types.pandas_dtype(c.dtype)) == c.dtype, c.name
        assert sources.fullmatch(c.source), c
        assert c.meaning and "\n" not in c.meaning, c.name
    assert [c.name for c in SCHEMA if c.dtype == "category"] == ["outcome"]


ONE_LINE_MORE = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    import fnrun_nb
    from fnrun_nb import Pool
    from fnrun_nb.batch import COLUMNS, OPTIONAL_COLUMNS, Batch

    assert fnrun_nb.__file__.startswith(sys.argv[2]), fnrun_nb.__file__
    with Pool(sys.argv[1], workers=1) as pool:
        df = pool.map(["a", "b"], progress=False).df
    replayed = df.assign(replay_of=[1.0, None])
    again = Batch.from_frame(replayed).df
    print(json.dumps({
        "columns": list(COLUMNS), "optional": OPTIONAL_COLUMNS,
        "dtypes": {c: str(t) for c, t in again.dtypes.items()},
        "same_wait": df["again_wait_ms"].tolist() == df["wait_ms"].tolist(),
        "pids": df["again_pid"].tolist() == df["pid"].tolist(),
        "replay_of": [None if pd.isna(v) else int(v) for v in again["replay_of"]],
    }))
    """
)


def test_a_new_column_is_one_line_in_the_table(tmp_path: Path) -> None:
    # A copy of the package with three lines added to SCHEMA and nothing else: two
    # columns made of CallInfo fields, one optional column a producer would set.
    package = tmp_path / "fnrun_nb"
    shutil.copytree(ROOT / "fnrun_nb", package, ignore=shutil.ignore_patterns("__pycache__"))
    schema = package / "batch" / "schema.py"
    text = schema.read_text()
    anchor = '    Column("host", "object", "dask",'
    assert text.count(anchor) == 1
    lines = (
        '    Column("again_wait_ms", "float64", "info.wait", "the wait, once more"),\n'
        '    Column("again_pid", "Int64", "info.pid", "the pid, once more"),\n'
        '    Column("replay_of", "Int64", "plan", "the row replayed", optional=True),\n'
    )
    schema.write_text(text.replace(anchor, lines + anchor))
    proc = subprocess.run(
        [sys.executable, "-c", ONE_LINE_MORE, str(HANDLERS / "echo.py"), str(package)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["columns"][-2:] == ["again_wait_ms", "again_pid"]
    assert report["optional"]["replay_of"] == "Int64"
    assert report["dtypes"]["again_wait_ms"] == "float64"
    assert report["dtypes"]["again_pid"] == "Int64"
    assert report["dtypes"]["replay_of"] == "Int64"
    assert report["same_wait"] and report["pids"]
    assert report["replay_of"] == [1, None]

