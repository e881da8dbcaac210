"""``batch.inputs``: the exact bytes each input sent, kept by the batch, saved with it
(or left out with ``inputs=False``) and loaded back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fnrun_nb import Pool
from fnrun_nb.batch import Batch

from conftest import HANDLERS


@pytest.fixture(scope="module")
def batch() -> Batch:
    raw = [b"first", b"", b"x" * 3000]
    inputs = [*raw, "é text", (b"paired", {"K": "v"})]
    with Pool(
        str(HANDLERS / "echo.py"), workers=2, timeout=10, process_env={"SECRET": "s3cr3t"}
    ) as pool:
        b = pool.map(inputs, env={"COMMON": "1"}, repeat=2, progress=False)
    b.raw = raw  # type: ignore[attr-defined]
    return b


def test_inputs_are_the_bytes_sent_indexed_by_input_index(batch: Batch) -> None:
    inputs = batch.inputs
    assert inputs is not None
    assert inputs.name == "input" and inputs.index.name == "input_index"
    assert inputs.tolist() == [b"first", b"", b"x" * 3000, "é text".encode(), b"paired"]
    # One entry per distinct input whatever the repeat; each row finds its input.
    assert len(batch.df) == 10 and len(inputs) == 5
    sent = inputs.loc[batch.df["input_index"]].tolist()
    assert sent == batch.df["data"].tolist()  # the echo handler answers what it got
    assert batch.df.loc[4, "env_in"] == {"COMMON": "1", "K": "v"}
    assert batch.inputs is inputs  # built once


def test_bytes_inputs_are_kept_by_reference(batch: Batch) -> None:
    inputs = batch.inputs
    assert inputs is not None
    for mine, kept in zip(batch.raw, inputs.tolist()):  # type: ignore[attr-defined]
        assert kept is mine


def test_a_list_of_equal_length_bytes_is_not_copied(echo_handler: str) -> None:
    # numpy would make a fixed-width array of equal-length bytes: the Series must not.
    raw = [bytes([i]) * 16 for i in range(20)]
    with Pool(echo_handler, workers=1, timeout=10) as pool:
        b = pool.map(raw, progress=False)
    assert b.inputs is not None
    assert all(kept is mine for kept, mine in zip(b.inputs.tolist(), raw))


def test_config_records_how_the_handler_starts(batch: Batch) -> None:
    assert batch.config["process_env"] == {"SECRET": "s3cr3t"}
    assert batch.config["cwd"] is None


def test_save_and_load_keep_the_inputs(batch: Batch, tmp_path: Path) -> None:
    path = batch.save(tmp_path / "run.parquet")
    back = Batch.load(path)
    assert back.inputs is not None and batch.inputs is not None
    pd.testing.assert_series_equal(back.inputs, batch.inputs, check_index_type=False)
    pd.testing.assert_frame_equal(back.df, batch.df)
    assert back.config["process_env"] == {"SECRET": "s3cr3t"}
    assert back.metadata["batch"]["inputs"] is True
    # Other readers see the inputs as one binary column, each input stored once.
    table = pq.read_table(path)
    column = table.column("input").to_pylist()
    assert sum(v is not None for v in column) == 5
    assert column[:5] == batch.inputs.tolist() and column[5:] == [None] * 5


def test_inputs_false_leaves_inputs_and_process_env_values_out(
    batch: Batch, tmp_path: Path
) -> None:
    path = batch.save(tmp_path / "private.parquet", inputs=False)
    assert b"s3cr3t" not in path.read_bytes()
    assert b"x" * 3000 not in path.read_bytes()
    assert "input" not in pq.read_table(path).column_names
    back = Batch.load(path)
    assert back.inputs is None
    assert back.config["process_env"] is None
    assert back.config["process_env_names"] == ["SECRET"]
    assert back.metadata["batch"]["inputs"] is False
    pd.testing.assert_frame_equal(back.df, batch.df)
    with pytest.raises(TypeError, match="inputs must be True or False"):
        batch.save(tmp_path / "bad.parquet", inputs="no")  # type: ignore[arg-type]


def test_inputs_survive_a_round_trip_of_a_reordered_record(tmp_path: Path) -> None:
    # A frame whose rows are not in submission order still saves each input once and
    # loads it under its own input_index.
    with Pool(str(HANDLERS / "echo.py"), workers=1, timeout=10) as pool:
        b = pool.map([b"a", b"b", b"c"], repeat=2, progress=False)
    df = b.df.iloc[::-1].reset_index(drop=True)
    other = Batch.from_frame(df, command=b.command, inputs=b.inputs)
    back = Batch.load(other.save(tmp_path / "rev.parquet"))
    assert back.inputs is not None
    assert back.inputs.to_dict() == {0: b"a", 1: b"b", 2: b"c"}


def test_a_frame_without_inputs_has_none(batch: Batch) -> None:
    assert Batch.from_frame(batch.df.copy()).inputs is None
