"""Save a batch record to parquet with what makes the run reproducible, and load it back.

A file holds the record (one row per call) and, in the parquet schema metadata under
the key ``fnrun_nb``, a JSON document: the handler command, the path and SHA-256 of
the handler file, the pool configuration, fnrun_nb / Python / pandas / OS versions,
the start time, the user's notes, and each column's pandas dtype.  Any parquet reader
(pandas, DuckDB, Polars) reads the record; ``Batch.load`` also restores it exactly:
dtypes (categorical ``outcome`` with all its categories, nullable integers,
tz-aware times) and the env columns, stored as parquet ``map<string, string>`` so
other tools see them as maps rather than JSON text.

The inputs (``batch.inputs``) are one more column, ``input`` (parquet ``BYTE_ARRAY``,
arrow ``large_binary``), outside the record's own columns: each distinct input's
bytes sit on the first row that ran it and every other row holds a null, so a batch
run with ``repeat`` stores each input once, nulls cost a bit each, and the inputs are
written as they are (no dictionary, no copy beyond arrow's buffer).  ``save(...,
inputs=False)`` writes no ``input`` column and keeps only the names of the
handler's process env (``config["process_env_names"]``), not their values.

pyarrow is the optional ``parquet`` extra; without it ``save``/``load`` raise
``ImportError`` naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .schema import COLUMNS, OPTIONAL_COLUMNS, conform

if TYPE_CHECKING:
    from .core import Batch

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "handler_file",
    "load_batch",
    "load_frame",
    "run_metadata",
    "save_batch",
    "save_frame",
]

METADATA_KEY = b"fnrun_nb"
FORMAT_VERSION = 1
MAP_COLUMNS = ("env", "env_in")
INPUT_COLUMN = "input"
"""The file column holding ``batch.inputs`` (not a column of ``batch.df``)."""
SCHEMA_DTYPES = {**COLUMNS, **OPTIONAL_COLUMNS}


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "saving and loading batches needs pyarrow: pip install 'fnrun-nb[parquet]'"
        ) from exc
    return pa, pq


# ``env`` options that take the next word as their value (GNU and BSD spellings).
_ENV_OPTIONS_WITH_VALUE = frozenset({"-u", "--unset", "-C", "--chdir", "-a", "--argv0", "-P"})


def _split(words: str) -> list[str]:
    try:
        return shlex.split(words)
    except ValueError:  # an unbalanced quote: env would refuse it; guess, never raise
        return words.split()


def _after_env(argv: list[str]) -> list[str]:
    """The command ``env`` runs: ``argv`` without ``env``, its options and its
    ``NAME=VALUE`` words.  ``-S``/``--split-string`` is split as ``env`` splits it."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-S", "--split-string"):
            return [*_split(argv[i + 1]), *argv[i + 2 :]] if i + 1 < len(argv) else []
        if arg.startswith("--split-string="):
            return [*_split(arg.partition("=")[2]), *argv[i + 1 :]]
        if arg.startswith("-S"):
            return [*_split(arg[2:]), *argv[i + 1 :]]
        if not arg.startswith("-"):
            break  # the first word that is not an option ("-" alone is one: -i)
        i += 2 if arg in _ENV_OPTIONS_WITH_VALUE else 1
    # Like env itself: after the options, every word with an "=" sets a variable.
    while i < len(argv) and "=" in argv[i]:
        i += 1
    return argv[i:]


def handler_file(command: Sequence[str] | None) -> Path | None:
    """The file a handler command runs: the script after an interpreter
    (``python handler.py``), else the program itself; ``None`` when no argument is
    an existing file (``python -m package``).  A leading ``env`` (with its options
    and ``NAME=VALUE`` words) is looked through: ``/usr/bin/env python3 h.py`` runs
    ``h.py``."""
    if not command:
        return None
    argv = list(command)
    first = os.path.basename(argv[0])
    if first == "env":
        return handler_file(_after_env(argv))
    # An interpreter runs the first file argument; hash that, not the interpreter.
    if first.startswith(("python", "pypy", "node", "ruby", "perl", "bash", "sh")):
        for arg in argv[1:]:
            if not arg.startswith("-") and os.path.isfile(arg):
                return Path(arg).resolve()
        return None
    return Path(argv[0]).resolve() if os.path.isfile(argv[0]) else None


def _sha256(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _config_dict(config: Any) -> dict[str, Any] | None:
    """A pool config as plain JSON: dataclass fields, with the factory reduced to its
    command line and working directory (a factory object cannot be stored)."""
    if config is None:
        return None
    if isinstance(config, dict):
        return {str(k): _jsonable(v) for k, v in config.items()}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if f.name == "factory":
                out["factory"] = {
                    "type": type(value).__name__,
                    "argv": _jsonable(getattr(value, "argv", None)),
                    "cwd": _jsonable(getattr(value, "cwd", None)),
                }
            else:
                out[f.name] = _jsonable(value)
        return out
    return {"repr": repr(config)}


def run_metadata(
    *,
    command: Sequence[str] | None,
    config: Any = None,
    started: pd.Timestamp | None = None,
    notes: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a saved batch carries besides its rows (see the module docstring)."""
    from .. import __version__

    handler = handler_file(command)
    return {
        "format": FORMAT_VERSION,
        "command": list(command) if command is not None else None,
        "handler": {
            "path": str(handler) if handler else None,
            "sha256": _sha256(handler) if handler else None,
        },
        "config": _config_dict(config),
        "started": None if started is None or pd.isna(started) else started.isoformat(),
        "notes": notes,
        "versions": {
            "fnrun_nb": __version__,
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
            "pandas": pd.__version__,
            "os": platform.platform(),
            "machine": platform.machine(),
        },
        **({"extra": _jsonable(extra)} if extra else {}),
    }


def _dtype_spec(dtype: Any) -> Any:
    if isinstance(dtype, pd.CategoricalDtype):
        return {"categories": [_jsonable(c) for c in dtype.categories],
                "ordered": bool(dtype.ordered)}
    return str(dtype)


def save_frame(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    metadata: dict[str, Any],
    *,
    binary: Mapping[str, Sequence[bytes | None]] | None = None,
) -> Path:
    """Write ``df`` and ``metadata`` (JSON-able) to a parquet file; returns its path.

    ``binary`` adds columns of bytes (or None) one value per row, stored as they are
    (no dictionary encoding) and outside ``df``'s own columns: :func:`load_frame`
    leaves them out of the frame.

    Raises ``ImportError`` without pyarrow, ``TypeError`` when an env column holds
    something other than a dict of strings (or None), and ``OSError`` from the file
    system.
    """
    pa, pq = _pyarrow()
    target = Path(path)
    maps = [c for c in MAP_COLUMNS if c in df.columns]
    table = pa.Table.from_pandas(df.drop(columns=maps), preserve_index=False)
    map_type = pa.map_(pa.string(), pa.string())
    for name in maps:
        values: list[list[tuple[Any, Any]] | None] = []
        for v in df[name]:
            if v is None:
                values.append(None)
            elif isinstance(v, dict):
                values.append(list(v.items()))
            else:
                raise TypeError(f"column {name!r} holds {type(v).__name__}, not a dict")
        table = table.append_column(name, pa.array(values, type=map_type))
    for name, column in (binary or {}).items():
        table = table.append_column(name, pa.array(column, type=pa.large_binary()))
    doc = {
        **metadata,
        "columns": list(map(str, df.columns)),
        "dtypes": {str(c): _dtype_spec(t) for c, t in df.dtypes.items()},
    }
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[METADATA_KEY] = json.dumps(doc).encode()
    # Dictionary pages suit the record's repetitive columns, not the bytes columns:
    # distinct inputs would fill a dictionary page and fall back to plain anyway.
    dictionary = [c for c in table.column_names if c not in (binary or {})]
    pq.write_table(
        table.replace_schema_metadata(schema_meta), target, use_dictionary=dictionary
    )
    return target


def load_frame(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file written by :func:`save_frame`: the record, restored to the dtypes
    and column order it was saved with, and its metadata.  The batch schema's columns
    (:data:`~fnrun_nb.batch.COLUMNS`, :data:`~fnrun_nb.batch.OPTIONAL_COLUMNS`) get
    the schema's dtypes, whatever pandas wrote the file.

    Raises ``ImportError`` without pyarrow, ``FileNotFoundError`` for a missing file
    and ``ValueError`` for a parquet file fnrun_nb did not write.
    """
    df, meta, _ = _load(path)
    return df, meta


def _load(
    path: str | os.PathLike[str], binary: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any], list[bytes | None] | None]:
    """``load_frame``, and the ``binary`` column's values (None without one)."""
    pa, pq = _pyarrow()
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no such batch file: {source}")
    table = pq.read_table(source)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{source} is a parquet file but not a saved fnrun_nb batch")
    meta: dict[str, Any] = json.loads(raw)
    extra: list[bytes | None] | None = None
    if binary is not None and binary in table.column_names:
        extra = table.column(binary).to_pylist()
        table = table.drop_columns([binary])
    df = table.to_pandas()
    for name in MAP_COLUMNS:
        if name in df.columns:
            df[name] = pd.Series(
                [None if v is None else dict(v) for v in df[name]], index=df.index, dtype=object
            )
    dtypes = meta.pop("dtypes", {})
    columns = meta.pop("columns", list(df.columns))
    for name, spec in dtypes.items():
        # A schema column gets the schema's dtype, not the one the file names: a file
        # written under another pandas may spell text as ``str``, which pandas 2 would
        # read as a numpy unicode dtype.
        if name not in df.columns or name in SCHEMA_DTYPES:
            continue
        if isinstance(spec, dict):
            target = pd.CategoricalDtype(spec["categories"], ordered=spec["ordered"])
        else:
            target = pd.api.types.pandas_dtype(spec)
        if df[name].dtype != target:
            df[name] = df[name].astype(target)
    conform(df)
    return df[columns], meta, extra


# --- Batch-level entry points (``batch.save`` / ``Batch.load``) ------------------------


def save_batch(
    batch: Batch,
    path: str | os.PathLike[str],
    *,
    notes: str | None = None,
    inputs: bool = True,
) -> Path:
    """Write a finished batch to ``path`` (parquet) with its run metadata and, unless
    ``inputs=False``, its inputs (see the module docstring for the layout).

    ``inputs=False`` is for private data: no input bytes, and of the process env only
    its names.  Raises ``RuntimeError`` while the batch runs, ``TypeError`` for an
    ``inputs`` that is not a bool, and what :func:`save_frame` raises.
    """
    if not isinstance(inputs, bool):
        raise TypeError(f"inputs must be True or False, not {inputs!r}")
    df = batch.df  # RuntimeError while running
    started = pd.Timestamp(batch.started_at, unit="s", tz="UTC")
    config = dict(batch.config)
    stored = inputs and batch.inputs is not None
    if not inputs and config.get("process_env") is not None:
        config["process_env_names"] = sorted(config["process_env"])
        config["process_env"] = None
    meta = run_metadata(command=batch.command, config=config, started=started, notes=notes)
    meta["batch"] = {
        "workers": batch.workers,
        "wall_s": batch.wall_s,
        "interrupted": batch.interrupted,
        "started_at": batch.started_at,
        "handler": batch.handler,
        "inputs": stored,
    }
    binary = {INPUT_COLUMN: _input_column(df, batch.inputs)} if stored else None
    return save_frame(df, path, meta, binary=binary)


def _input_column(df: pd.DataFrame, inputs: pd.Series | None) -> list[bytes | None]:
    """One value per row: the input's bytes on the first row that ran it, else None."""
    assert inputs is not None
    index = df["input_index"].to_numpy()
    column: list[bytes | None] = [None] * len(df)
    by_index = dict(zip(inputs.index.tolist(), inputs.tolist()))
    first = ~pd.Series(index).duplicated().to_numpy()
    for k in first.nonzero()[0].tolist():
        column[k] = by_index.get(int(index[k]))
    return column


def load_batch(path: str | os.PathLike[str]) -> Batch:
    """A finished :class:`Batch` from a file written by :func:`save_batch`.

    Its ``metadata`` holds everything saved beside the rows (handler hash, versions,
    notes...).  Raises what :func:`load_frame` raises.
    """
    from .core import Batch

    df, meta, column = _load(path, INPUT_COLUMN)
    facts = meta.get("batch", {})
    inputs = None
    if column is not None:
        index = df["input_index"].to_numpy()
        first = [k for k, v in enumerate(column) if v is not None]
        inputs = pd.Series(
            [column[k] for k in first],
            index=pd.Index(index[first], name="input_index"),
            name="input",
            dtype=object,
        ).sort_index()
    batch = Batch.from_frame(
        df,
        command=meta.get("command"),
        handler=facts.get("handler"),
        config=meta.get("config") or {},
        workers=facts.get("workers"),
        wall_s=facts.get("wall_s"),
        interrupted=bool(facts.get("interrupted", False)),
        started_at=facts.get("started_at"),
        inputs=inputs,
    )
    batch.metadata = meta
    return batch
