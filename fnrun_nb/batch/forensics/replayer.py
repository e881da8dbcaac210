"""``batch.replay()``: run chosen rows' exact inputs again, and say whether they fail
the same way every time (deterministic), some of the time (flaky) or not at all.

::

    rows ──labels──▶ (input bytes, env_in) of each row ──run_batch, repeat=times──▶
         HandlerPool of the batch's command, cwd, process env, timeout
         (fresh: a new process per attempt) ──▶ Replay.batch (every attempt, replay_of)
                                              ──▶ Replay.df (one row per replayed row)

The attempts run through the batch layer's own ``run_batch``, so they are a Batch like
any other (its columns, its Ctrl-C handling), plus ``replay_of``, the label of the row
each attempt replays, and ``attempt`` (0-based).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...errors import HandlerStartError, Interrupted
from ..runner import run_batch
from .calls import batch_of
from .target import Target

if TYPE_CHECKING:
    from ..core import Batch

__all__ = ["VERDICTS", "Replay", "replay", "select_rows"]

VERDICTS = ("deterministic", "flaky", "not reproduced")
_COLUMNS = ("replay_of", "outcome", "exit_code", "reproduced", "attempts", "verdict")


@dataclass(frozen=True)
class Replay:
    """The result of ``batch.replay()``.

    ``df`` has one row per replayed row: ``replay_of`` (its label in the original
    ``batch.df``), its original ``outcome`` and ``exit_code``, ``reproduced`` (attempts
    that ended with that same outcome and exit code), ``attempts`` (attempts run) and
    ``verdict``: ``deterministic`` when every attempt reproduced it, ``not
    reproduced`` when none did, ``flaky`` otherwise.  ``batch`` is every attempt as a
    Batch with the columns ``replay_of`` and ``attempt``.  ``interrupted`` is True when
    Ctrl-C stopped it (attempts not run are ``cancelled`` rows of ``batch`` and are not
    counted in ``attempts``); such a Replay is the ``partial`` of the
    :class:`~fnrun_nb.errors.Interrupted` that ``replay`` raised.
    """

    df: pd.DataFrame
    batch: Batch
    times: int
    fresh: bool
    interrupted: bool = False

    @property
    def verdicts(self) -> dict[str, int]:
        """Replayed rows per verdict."""
        counts = self.df["verdict"].value_counts()
        return {v: int(counts.get(v, 0)) for v in VERDICTS}

    def _headline(self) -> str:
        how = "a fresh process per attempt" if self.fresh else "a warm pool"
        rows = len(self.df)
        if not rows:
            return "Replay of no rows (nothing to replay)"
        found = ", ".join(f"{n} {v}" for v, n in self.verdicts.items() if n)
        cut = "; interrupted" if self.interrupted else ""
        return f"Replay of {rows} row{'s' * (rows != 1)} x {self.times} ({how}): {found}{cut}"

    def __repr__(self) -> str:
        if not len(self.df):
            return self._headline()
        table = self.df.assign(
            exit_code=self.df["exit_code"].astype(object).where(self.df["exit_code"].notna(), "")
        ).to_string(index=False)
        return f"{self._headline()}\n{table}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        colours = {"deterministic": "#c0392b", "flaky": "#d68910", "not reproduced": "#1e8449"}
        head = "".join(f"<th>{escape(c)}</th>" for c in self.df.columns)
        rows = []
        for rec in self.df.itertuples(index=False):
            cells = []
            for name, value in zip(self.df.columns, rec):
                text = "" if value is None or value is pd.NA else escape(str(value))
                style = (f" style='color:{colours[text]};font-weight:bold'"
                         if name == "verdict" and text in colours else "")
                cells.append(f"<td{style}>{text}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                 if rows else "")
        return f"<div><b>{escape(self._headline())}</b></div>{table}"


def select_rows(df: pd.DataFrame, rows: Any) -> list[Any]:
    """Row labels of ``df`` from what ``replay``/``shrink`` accept: labels, one label,
    a boolean mask (one value per row) or a DataFrame slice of ``df``.  Raises
    ``KeyError`` naming labels ``df`` does not have, ``ValueError`` for a mask of the
    wrong length."""
    if isinstance(rows, pd.DataFrame):
        labels = list(rows.index)
    elif isinstance(rows, (pd.Series, np.ndarray, list, tuple, pd.Index)) and len(rows) and all(
        isinstance(v, (bool, np.bool_)) for v in (rows.tolist() if hasattr(rows, "tolist") else rows)
    ):
        if len(rows) != len(df):
            raise ValueError(f"a boolean mask of rows needs {len(df)} values, got {len(rows)}")
        mask = rows.to_numpy(dtype=bool) if isinstance(rows, pd.Series) else np.asarray(rows, bool)
        labels = list(df.index[mask])
    elif isinstance(rows, (Sequence, pd.Index, np.ndarray, pd.Series)) and not isinstance(
        rows, (str, bytes)
    ):
        labels = list(rows.tolist() if hasattr(rows, "tolist") else rows)
    else:
        labels = [rows]
    missing = [label for label in labels if label not in df.index]
    if missing:
        raise KeyError(f"no row labelled {', '.join(map(repr, missing[:5]))} in batch.df")
    return labels


def row_input(batch: Batch, label: Any) -> tuple[bytes, dict[str, str]]:
    """The exact input bytes and env ``batch.df.loc[label]`` was sent.  Raises
    ``ValueError`` when the batch holds no inputs."""
    inputs = batch.inputs
    if inputs is None:
        raise ValueError(
            "this batch has no inputs to replay (it was saved with inputs=False, or made "
            "from a frame without them)"
        )
    row = batch.df.loc[label]
    data = inputs.get(int(row["input_index"]))
    if data is None:
        raise ValueError(f"row {label!r}: input {int(row['input_index'])} is not in batch.inputs")
    return bytes(data), dict(row["env_in"] or {})


def replay(
    batch: Batch,
    rows: Any = None,
    *,
    times: int = 3,
    fresh: bool = True,
    command: str | Sequence[str] | None = None,
    workers: int = 2,
    timeout: float | None = None,
    progress: bool | str = False,
) -> Replay:
    """See :meth:`fnrun_nb.batch.Batch.replay`."""
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an int >= 1, got {times!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    df = batch.df
    labels = select_rows(df, batch.failed if rows is None else rows)
    items = [row_input(batch, label) for label in labels]
    target = Target.of_batch(batch, command=command, timeout=timeout)
    original = df.loc[labels, ["outcome", "exit_code"]] if labels else df.iloc[:0][
        ["outcome", "exit_code"]
    ]
    if not labels:
        empty = batch_of([], command=target.command, handler=target.name, config={},
                         workers=0, wall_s=0.0, started_at=time.time(),
                         columns={"replay_of": [], "attempt": []})
        return Replay(_summary(original, labels, empty.df, times), empty, times, fresh)
    interrupted = False
    with target.start(min(workers, len(items) * times), fresh=fresh) as pool:
        try:
            attempts = run_batch(pool, items, repeat=times, progress=progress)
        except KeyboardInterrupt:
            # run_batch kept the partial batch (unrun attempts cancelled): keep it too.
            interrupted = True
            assert pool.last_batch is not None
            attempts = pool.last_batch
    adf = attempts.df
    if not interrupted:
        # Interrupted, Ctrl-C wins: an Exception here could be caught and the program
        # go on.
        _raise_if_it_cannot_start(target, original, adf)
    adf["replay_of"] = pd.Series(
        np.array(labels, dtype=object)[adf["input_index"].to_numpy()], index=adf.index,
        dtype=object,
    )
    adf["attempt"] = adf["repeat"].to_numpy()
    attempts.config["replay"] = {"times": times, "fresh": fresh}
    result = Replay(_summary(original, labels, adf, times), attempts, times, fresh, interrupted)
    if interrupted:
        raise Interrupted(_interrupted_message(result), result) from None
    return result


def _interrupted_message(r: Replay) -> str:
    """``replay interrupted after 4 of 9 attempts; 1 deterministic, 1 flaky so far,
    kept in .partial``."""
    ran = int(r.df["attempts"].sum())
    found = ", ".join(f"{n} {v}" for v, n in r.verdicts.items() if n and v != "not reproduced")
    so_far = f"; {found} so far" if found else "; nothing reproduced yet"
    return (
        f"replay interrupted after {ran} of {len(r.batch)} attempt{'s' * (len(r.batch) != 1)}"
        f"{so_far}, kept in .partial"
    )


def _raise_if_it_cannot_start(target: Target, original: pd.DataFrame, attempts: pd.DataFrame) -> None:
    """``HandlerStartError`` when no attempt got a process that started, unless the
    rows replayed were start failures themselves (then that is the finding)."""
    ran = attempts[attempts["outcome"] != "cancelled"]
    if not len(ran) or (original["outcome"] == "start_failed").all():
        return
    if (ran["outcome"] == "start_failed").all():
        raise HandlerStartError(
            target.command, f"no attempt could start it; the first: {ran['error'].iloc[0]}"
        )


def _summary(
    original: pd.DataFrame, labels: list[Any], attempts: pd.DataFrame, times: int
) -> pd.DataFrame:
    """One row per replayed row: its original outcome and how many attempts matched."""
    out = []
    for label in labels:
        outcome = str(original.loc[label, "outcome"])
        code = original.loc[label, "exit_code"]
        code = None if pd.isna(code) else int(code)
        mine = attempts[attempts["replay_of"] == label]
        ran = mine[mine["outcome"] != "cancelled"]
        codes = [None if pd.isna(c) else int(c) for c in ran["exit_code"]]
        same = sum(
            1 for o, c in zip(ran["outcome"].astype(str), codes) if o == outcome and c == code
        )
        n = len(ran)
        verdict = "deterministic" if n and same == n else "not reproduced" if same == 0 else "flaky"
        out.append((label, outcome, code, same, n, verdict))
    frame = pd.DataFrame(out, columns=list(_COLUMNS))
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    frame["reproduced"] = frame["reproduced"].astype("int64")
    frame["attempts"] = frame["attempts"].astype("int64")
    return frame[list(_COLUMNS)]
