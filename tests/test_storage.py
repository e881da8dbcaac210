"""``batch.save`` / ``Batch.load``: parquet with run metadata, an exact round trip."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fnrun_nb
from fnrun_nb import Pool
from fnrun_nb.batch import COLUMNS, Batch


@pytest.fixture(scope="module")
def batch() -> Batch:
    from conftest import HANDLERS

    inputs = [(f"item {i}", {"N": str(i)}) for i in range(8)] + ["plain"]
    with Pool(str(HANDLERS / "echo.py"), workers=2, timeout=10) as pool:
        return pool.map(inputs, env={"COMMON": "yes"}, repeat=2, progress=False)


def test_round_trip_keeps_rows_dtypes_and_env_columns(batch: Batch, tmp_path: Path) -> None:
    path = batch.save(tmp_path / "run.parquet", notes="baseline before the refactor")
    back = Batch.load(path)
    pd.testing.assert_frame_equal(back.df, batch.df)
    assert list(back.df.columns) == list(COLUMNS)
    assert back.df["outcome"].cat.categories.tolist() == list(fnrun_nb.batch.OUTCOMES)
    assert back.df.loc[0, "env_in"] == {"COMMON": "yes", "N": "0"}
    assert back.df.loc[0, "env"] == {"COMMON": "yes", "N": "0"}
    assert back.command == batch.command and back.workers == 2
    assert back.wall_s == batch.wall_s and back.started_at == batch.started_at
    assert back.summary().latency == batch.summary().latency


def test_metadata_makes_the_run_reproducible(batch: Batch, tmp_path: Path) -> None:
    from conftest import HANDLERS

    back = Batch.load(batch.save(tmp_path / "run.parquet", notes="n1"))
    meta = back.metadata
    echo = HANDLERS / "echo.py"
    assert meta["handler"] == {
        "path": str(echo.resolve()),
        "sha256": hashlib.sha256(echo.read_bytes()).hexdigest(),
    }
    assert meta["notes"] == "n1" and meta["command"] == batch.command
    assert meta["versions"]["fnrun_nb"] == fnrun_nb.__version__
    assert meta["versions"]["python"] == platform.python_version()
    assert meta["versions"]["os"] == platform.platform()
    assert pd.Timestamp(meta["started"]) == pd.Timestamp(batch.started_at, unit="s", tz="UTC")
    assert meta["config"] == {k: v for k, v in batch.config.items()}
    # Any parquet reader sees the env columns as maps, not JSON text.
    schema = pq.read_schema(tmp_path / "run.parquet")
    assert isinstance(schema.field("env").type, pa.MapType)
    assert schema.field("env").type.key_type == pa.string()


def test_load_refuses_files_it_did_not_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(plain)
    with pytest.raises(ValueError, match="not a saved fnrun_nb batch"):
        Batch.load(plain)
    with pytest.raises(FileNotFoundError):
        Batch.load(tmp_path / "missing.parquet")


def test_missing_pyarrow_names_the_parquet_extra(
    batch: Batch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"fnrun-nb\[parquet\]"):
        batch.save(tmp_path / "x.parquet")


def test_handler_file_looks_through_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fnrun_nb.batch.storage import handler_file

    script = tmp_path / "h.py"
    script.write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)  # relative script names resolve here
    env = "/usr/bin/env"
    assert handler_file([env, "python3", str(script)]) == script.resolve()
    # Options, their values and NAME=VALUE words are env's, not the handler's.
    assert handler_file(
        ["env", "-i", "-u", "HOME", "--", "A=1", "B=x=y", "python3", "-u", "h.py"]
    ) == script.resolve()
    assert handler_file([env, "-S", "python3 -u", "h.py"]) == script.resolve()
    assert handler_file([env, "--split-string=python3 h.py"]) == script.resolve()
    # env running the script itself; env of env.
    assert handler_file([env, "X=1", "./h.py"]) == script.resolve()
    assert handler_file([env, "-", "env", "python3", "h.py"]) == script.resolve()
    # Nothing to run, or nothing that is a file: no handler file (never env itself).
    assert handler_file([env]) is None
    assert handler_file([env, "-u"]) is None
    assert handler_file([env, "A=1", "python3", "-m", "pkg"]) is None


def test_saved_metadata_hashes_the_script_run_through_env(tmp_path: Path) -> None:
    from conftest import HANDLERS

    echo = HANDLERS / "echo.py"
    with Pool(["/usr/bin/env", "MODE=test", sys.executable, str(echo)], workers=1) as pool:
        batch = pool.map(["a"], progress=False)
    meta = Batch.load(batch.save(tmp_path / "run.parquet")).metadata
    assert meta["handler"] == {
        "path": str(echo.resolve()),
        "sha256": hashlib.sha256(echo.read_bytes()).hexdigest(),
    }
