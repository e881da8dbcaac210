"""What every analysis reads of the record: the ok rows, the columns that name a worker
slot, and a clear error for a record without the columns an analysis needs."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["ok_rows", "require", "slot_keys"]


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose handler returned a Result (``outcome == "ok"``)."""
    return df[df["outcome"] == "ok"]


def require(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """``KeyError`` naming the ``columns`` that ``df`` lacks, if any."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"the batch record has no column(s) {', '.join(map(repr, missing))}")


def slot_keys(df: pd.DataFrame) -> list[str]:
    """The columns that name a worker slot: ``["dask_worker", "worker"]`` for a batch
    that ran on Dask, else ``["worker"]``."""
    return ["dask_worker", "worker"] if "dask_worker" in df.columns else ["worker"]
