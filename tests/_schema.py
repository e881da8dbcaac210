"""The one-schema check shared by the schema tests (local and Dask)."""

from __future__ import annotations

import pandas as pd

from fnrun_nb.batch import COLUMNS, OPTIONAL_COLUMNS, OUTCOMES

TEXT = ("error", "stderr_tail", "host", "dask_worker")


def assert_schema(df: pd.DataFrame, *, values: bool = True) -> None:
    """``df`` has the columns of COLUMNS in order, then only optional ones, each with
    exactly its declared dtype; with ``values``, its text is ``str`` or ``None``."""
    names = list(df.columns)
    assert names[: len(COLUMNS)] == list(COLUMNS)
    extra = names[len(COLUMNS) :]
    assert set(extra) <= set(OPTIONAL_COLUMNS), extra
    expected = {**COLUMNS, **{name: OPTIONAL_COLUMNS[name] for name in extra}}
    assert {name: str(dtype) for name, dtype in df.dtypes.items()} == expected
    assert tuple(df["outcome"].cat.categories) == OUTCOMES
    if values:
        for name in TEXT:
            if name in df.columns:
                kinds = {type(v).__name__ for v in df[name]}
                assert kinds <= {"str", "NoneType"}, (name, kinds)
