"""Questions people ask of every batch: percentiles, the per-worker view, warm-up.

Each function takes the canonical record (``Batch.df``, one row per call) and returns
a DataFrame or a value object; ``Batch`` exposes them as ``batch.percentiles()``,
``batch.by_worker()`` and ``batch.warmup()``.

Latency statistics describe *ok* calls (``outcome == "ok"``: the handler returned a
Result, whatever its status) unless a function says otherwise: the time a crashed or
timed-out call took says how long it took to fail, not how fast the handler is.
Percentiles use numpy's default (linear interpolation), the same definition pandas'
``quantile`` uses, so numbers agree with whatever a user computes by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_Q",
    "LATENCY_METRICS",
    "WarmupReport",
    "by_worker",
    "format_percent",
    "ok_rows",
    "percentile_label",
    "percentiles",
    "quantiles",
    "slot_keys",
    "warmup",
]

DEFAULT_Q: tuple[float, ...] = (50, 90, 99, 99.9)
LATENCY_METRICS: tuple[str, ...] = ("latency_ms", "wait_ms", "service_ms")


def percentile_label(q: float) -> str:
    """``50 -> "p50"``, ``99.9 -> "p99.9"``: the column name of a percentile."""
    return f"p{q:g}"


def format_percent(fraction: float) -> str:
    """``0.05 -> "5%"``, ``0.025 -> "2.5%"``, ``0.975 -> "97.5%"``: a fraction as a
    percentage with the digits it has (up to six significant), never rounded to a
    whole percent that would misstate a threshold."""
    return f"{round(fraction * 100, 6):g}%"


def _check_q(q: Sequence[float] | float) -> tuple[float, ...]:
    qs = (q,) if isinstance(q, (int, float)) else tuple(q)
    if not qs:
        raise ValueError("q must name at least one percentile")
    for v in qs:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ValueError(f"percentiles must be numbers in [0, 100], got {v!r}")
    return tuple(float(v) for v in qs)


def quantiles(values: Any, q: Sequence[float] = DEFAULT_Q) -> dict[str, float]:
    """Percentiles of ``values`` (NaN dropped) as ``{"p50": ..., ...}``.

    The one percentile helper of the batch package: numpy's linear interpolation.
    Every value is NaN when nothing is left after dropping NaN.
    """
    qs = _check_q(q)
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {percentile_label(v): float("nan") for v in qs}
    got = np.percentile(arr, qs)
    return {percentile_label(v): float(x) for v, x in zip(qs, got)}


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose handler returned a Result (``outcome == "ok"``)."""
    return df[df["outcome"] == "ok"]


def _require(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"the batch record has no column(s) {', '.join(map(repr, missing))}")


def percentiles(
    df: pd.DataFrame,
    q: Sequence[float] | float = DEFAULT_Q,
    by: str | Sequence[str] | None = None,
    *,
    ok_only: bool = True,
) -> pd.DataFrame:
    """Latency, wait and service percentiles in milliseconds.

    Without ``by``: one row per metric (``latency_ms``, ``wait_ms``, ``service_ms``),
    an ``n`` column (values used) then one column per percentile (``p50``, ``p99.9``).
    With ``by`` (``"worker"``, ``"status"``, ``"cold"``, any column or list of
    columns): the same, indexed by (group..., metric); ``by="worker"`` on a Dask batch
    groups by (``dask_worker``, ``worker``), as worker slots repeat across Dask
    workers.  Groups are those present in the data; a missing group value (NA) is left
    out.  ``ok_only`` keeps ok calls only
    (the default, see the module docstring); ``ok_only=False`` uses every row with a
    value, which is what ``by="outcome"`` needs.

    Values equal ``numpy.percentile`` on the same rows.  Raises ``ValueError`` for a
    percentile outside [0, 100] and ``KeyError`` for an unknown ``by`` column.
    """
    qs = _check_q(q)
    labels = [percentile_label(v) for v in qs]
    rows = ok_rows(df) if ok_only else df
    if by is None:
        table = {}
        for metric in LATENCY_METRICS:
            values = rows[metric].to_numpy(dtype=float, na_value=np.nan)
            n = int(np.count_nonzero(~np.isnan(values)))
            table[metric] = {"n": n, **quantiles(values, qs)}
        out = pd.DataFrame.from_dict(table, orient="index", columns=["n", *labels])
        out.index.name = "metric"
        return out.astype({"n": "int64"})

    keys = [by] if isinstance(by, str) else list(by)
    if keys == ["worker"]:
        # A slot number names a worker only within one pool: on Dask, key it by the
        # Dask worker too, as by_worker does.
        keys = slot_keys(df)
    _require(df, keys)
    long = rows[[*keys, *LATENCY_METRICS]].melt(
        id_vars=keys, var_name="metric", value_name="ms"
    )
    long["ms"] = long["ms"].astype(float)
    long = long.dropna(subset=["ms"])
    # groupby().quantile interpolates linearly, exactly like numpy.percentile, and is
    # vectorised across groups (by="input_index" on 100k rows stays fast).
    grouped = long.groupby([*keys, "metric"], observed=True, sort=True)["ms"]
    table = grouped.quantile([v / 100 for v in qs]).unstack(-1)
    table.columns = labels
    table.insert(0, "n", grouped.size().astype("int64"))
    # Metrics in their usual order rather than alphabetical.
    order = {m: i for i, m in enumerate(LATENCY_METRICS)}
    table = table.sort_index(
        level=[*keys, "metric"],
        key=lambda idx: idx.map(order) if idx.name == "metric" else idx,
    )
    return table


def slot_keys(df: pd.DataFrame) -> list[str]:
    """The columns that name a worker slot: ``["dask_worker", "worker"]`` for a batch
    that ran on Dask, else ``["worker"]``."""
    return ["dask_worker", "worker"] if "dask_worker" in df.columns else ["worker"]


def _wall_s(df: pd.DataFrame) -> float:
    """Seconds from the first call started to the last call finished (0 if none)."""
    started = df["started"].dropna()
    finished = df["finished"].dropna()
    if started.empty or finished.empty:
        return 0.0
    return max(0.0, float((finished.max() - started.min()).total_seconds()))


# Outcomes of a call whose process the pool ends and replaces: every failure raised by
# the exchange itself (the pool's ``_fail``), which is any failure with a worker except
# a cancellation.  ``unavailable`` never reached a worker; ``worker_lost`` (Dask) lost
# the whole pool with its host.
_ENDS_PROCESS = ("crashed", "timeout", "protocol_error", "start_failed")


def _ended_process(rows: pd.DataFrame) -> np.ndarray:
    """Per row, whether the call ended the process that served it.

    A ``cancelled`` call that had reached a worker was killed when its batch was
    stopped, and its process replaced, unless the pool itself was closing
    (``PoolClosed``): a closed pool replaces nothing.
    """
    outcome = rows["outcome"].astype(str)
    ended = outcome.isin(_ENDS_PROCESS)
    if "error" in rows.columns:
        closing = rows["error"].astype(str).str.contains("PoolClosed", regex=False)
        ended = ended | ((outcome == "cancelled") & ~closing)
    out: np.ndarray = ended.to_numpy(dtype=bool)
    return out


def by_worker(
    df: pd.DataFrame, *, max_calls_per_worker: int | None = None
) -> pd.DataFrame:
    """One row per worker slot that served a call, indexed by :func:`slot_keys`.

    Columns: ``calls`` (rows served by the slot, any outcome), ``failures`` (outcome
    not ok), ``replacements`` (processes of the slot that ended during the batch and
    were replaced: after a failed call, by recycling, or by dying while idle),
    ``processes`` (distinct pids), ``busy_s`` (sum of service time), ``utilisation``
    (``busy_s`` over the batch's wall time, first start to last finish),
    ``service_p50_ms`` and ``service_p99_ms`` (ok calls; NaN for a slot without one).
    Rows without a worker (a call that never reached one) are not counted here.

    ``replacements`` counts the generation changes between the slot's calls, plus one
    when the slot's last call ended its process (a crash, timeout, protocol error or
    start failure, or a kill when the batch was stopped): the pool replaced that
    process although no later call shows it.  A recycle after the last call is seen
    only when ``max_calls_per_worker`` (the pool's setting, ``batch.config``) is given.
    """
    keys = slot_keys(df)
    _require(df, [*keys, "outcome", "generation", "call_on_worker", "pid", "service_ms"])
    rows = df.dropna(subset=keys)
    cols = [
        "calls", "failures", "replacements", "processes", "busy_s", "utilisation",
        "service_p50_ms", "service_p99_ms",
    ]
    if rows.empty:
        empty = pd.DataFrame(columns=cols)
        empty.index = pd.MultiIndex.from_arrays([[]] * len(keys), names=keys) if len(
            keys
        ) > 1 else pd.Index([], name=keys[0])
        return empty
    ok = (rows["outcome"] == "ok").to_numpy()
    call = rows["call_on_worker"].astype("float64")
    ended = _ended_process(rows)
    if max_calls_per_worker is not None:
        # The pool recycles a process after the call that reaches the limit.
        ended = ended | (ok & (call.to_numpy() >= max_calls_per_worker))
    work = pd.DataFrame(
        {
            **{k: rows[k] for k in keys},
            "failed": ~ok,
            "generation": rows["generation"].astype("float64"),
            "call": call,
            "ended": ended,
            "pid": rows["pid"],
            "service_s": rows["service_ms"].astype("float64") / 1e3,
            "ok_service": rows["service_ms"].astype("float64").where(rows["outcome"] == "ok"),
        }
    )
    g = work.groupby(keys, observed=True, sort=True)
    # The slot's last call: its latest process, and the latest call on that process.
    last = (
        work.sort_values(["generation", "call"], kind="stable", na_position="first")
        .groupby(keys, observed=True, sort=True)["ended"]
        .last()
    )
    changes = (g["generation"].max() - g["generation"].min()).fillna(0)
    out = pd.DataFrame(
        {
            "calls": g.size().astype("int64"),
            "failures": g["failed"].sum().astype("int64"),
            "replacements": (changes + last.astype("int64")).astype("int64"),
            "processes": g["pid"].nunique().astype("int64"),
            "busy_s": g["service_s"].sum(),
        }
    )
    wall = _wall_s(df)
    out["utilisation"] = out["busy_s"] / wall if wall > 0 else float("nan")
    out["service_p50_ms"] = g["ok_service"].quantile(0.5)
    out["service_p99_ms"] = g["ok_service"].quantile(0.99)
    return out[cols]


# --- warm-up -----------------------------------------------------------------------


@dataclass(frozen=True)
class WarmupReport:
    """Cold versus warm calls of a batch, and where service time settles.

    ``cold`` and ``warm`` summarise the metric for first calls on a process and for the
    rest (keys ``n``, ``p50``, ``p90``, ``mean``; ms).  ``curve`` is indexed by
    ``call_on_worker`` with columns ``n``, ``p50``, ``p90``.  ``steady_ms`` is the
    median of the later half of the curve's calls, and ``settles_after`` the number of
    leading calls on a process whose median is above the band (``steady_ms * (1 +
    tolerance)``, widened to the p90 of those later calls when the batch is noisier
    than that, and to at least ``floor_ms`` above ``steady_ms``) before ``run`` consecutive points stay within it: 0 when even the
    first call is not slow, ``None`` when the curve never settles in this batch.
    """

    metric: str
    cold: dict[str, float]
    warm: dict[str, float]
    curve: pd.DataFrame
    steady_ms: float
    settles_after: int | None
    tolerance: float
    run: int

    @property
    def cold_penalty_ms(self) -> float:
        """Median cold minus median warm (NaN if either side has no call)."""
        return self.cold["p50"] - self.warm["p50"]

    @property
    def cold_ratio(self) -> float:
        """Median cold over median warm (NaN if either side has no call)."""
        warm = self.warm["p50"]
        return self.cold["p50"] / warm if warm > 0 else float("nan")

    def _lines(self) -> list[str]:
        c, w = self.cold, self.warm
        lines = [
            f"warm-up of {self.metric}: cold median {_ms(c['p50'])} (n={int(c['n'])}), "
            f"warm median {_ms(w['p50'])} (n={int(w['n'])})",
        ]
        if c["n"] and w["n"]:
            lines.append(
                f"first call on a process costs {_ms(self.cold_penalty_ms, signed=True)} "
                f"({self.cold_ratio:.3g}x warm)"
            )
        band = f"within {format_percent(self.tolerance)} of the steady {_ms(self.steady_ms)}"
        if self.settles_after is None:
            lines.append(f"does not settle {band} in this batch")
        elif self.settles_after == 0:
            lines.append(f"no warm-up: settled {band} from the first call")
        else:
            s = "" if self.settles_after == 1 else "s"
            lines.append(f"settles after {self.settles_after} call{s} per process ({band})")
        return lines

    def __repr__(self) -> str:
        return "<WarmupReport\n  " + "\n  ".join(self._lines()) + "\n>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text("\n".join(self._lines()))

    def _repr_html_(self) -> str:
        head = "".join(f"<div>{escape(line)}</div>" for line in self._lines())
        shown = self.curve.head(20)
        rows = "".join(
            f"<tr><td>{int(k)}</td><td>{int(r['n'])}</td><td>{r['p50']:.3f}</td>"
            f"<td>{r['p90']:.3f}</td></tr>"
            for k, r in shown.iterrows()
        )
        more = (
            f'<div style="color:#666">first 20 of {len(self.curve)} points</div>'
            if len(self.curve) > 20
            else ""
        )
        return (
            f'<div class="fnrun-warmup">{head}<table><thead><tr><th>call on worker</th>'
            f"<th>n</th><th>p50 ms</th><th>p90 ms</th></tr></thead><tbody>{rows}</tbody>"
            f"</table>{more}</div>"
        )


def _ms(v: float, signed: bool = False) -> str:
    if v != v:  # NaN
        return "n/a"
    sign = "+" if signed and v >= 0 else ""
    return f"{sign}{v:.3g} ms"


def _summ(values: np.ndarray) -> dict[str, float]:
    n = float(values.size)
    if values.size == 0:
        return {"n": 0.0, "p50": float("nan"), "p90": float("nan"), "mean": float("nan")}
    p50, p90 = np.percentile(values, [50, 90])
    return {"n": n, "p50": float(p50), "p90": float(p90), "mean": float(values.mean())}


def warmup(
    df: pd.DataFrame,
    metric: str = "service_ms",
    *,
    tolerance: float = 0.25,
    run: int = 3,
    floor_ms: float = 0.1,
) -> WarmupReport:
    """Cold versus warm ``metric`` (ok calls) and the curve against ``call_on_worker``.

    ``tolerance`` is the relative band around the steady level that counts as settled,
    never narrower than ``floor_ms`` (a 50 µs handler whose second call takes 80 µs
    has not "warmed up"), and ``run`` how many consecutive points must stay in it (one
    noisy point on a busy machine must not decide).  Raises ``ValueError`` for a
    negative tolerance or floor or a ``run`` below 1, ``KeyError`` for an unknown
    metric.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if not floor_ms >= 0:
        raise ValueError(f"floor_ms must be >= 0, got {floor_ms!r}")
    if isinstance(run, bool) or not isinstance(run, int) or run < 1:
        raise ValueError(f"run must be an int >= 1, got {run!r}")
    _require(df, [metric, "call_on_worker", "cold"])
    rows = ok_rows(df).dropna(subset=[metric, "call_on_worker"])
    values = rows[metric].to_numpy(dtype=float)
    cold_mask = rows["cold"].to_numpy(dtype=bool, na_value=False)
    calls = rows["call_on_worker"].to_numpy(dtype="int64")

    curve_frame = pd.DataFrame({"call_on_worker": calls, "v": values})
    g = curve_frame.groupby("call_on_worker", sort=True)["v"]
    curve = pd.DataFrame(
        {"n": g.size().astype("int64"), "p50": g.median(), "p90": g.quantile(0.9)}
    )

    if curve.empty:
        steady = float("nan")
        settles: int | None = None
    else:
        # The steady level comes from the later half of a process's life, which the
        # warm-up cannot reach unless it lasts most of the batch.
        last = int(curve.index.max())
        late = values[calls > last // 2] if last > 1 else values
        steady, late_p90 = (float(x) for x in np.percentile(late, [50, 90]))
        # A point counts as slow only above both the relative band and the p90 of the
        # steady calls: with a few processes each point is a median of a few values,
        # and the batch's own spread is the noise it has to beat.
        # Below floor_ms a difference is timer and scheduler noise, not a warm-up.
        ceiling = max(steady * (1 + tolerance), late_p90, steady + floor_ms)
        settles = _settle_point(curve["p50"], ceiling, run)
    return WarmupReport(
        metric=metric,
        cold=_summ(values[cold_mask]),
        warm=_summ(values[~cold_mask]),
        curve=curve,
        steady_ms=steady,
        settles_after=settles,
        tolerance=tolerance,
        run=run,
    )


def _settle_point(p50: pd.Series, ceiling: float, run: int) -> int | None:
    """Leading calls before ``run`` consecutive curve points are at most ``ceiling``.

    A curve shorter than ``run`` points settles only if all of it is in the band.
    """
    within = (p50.to_numpy() <= ceiling).tolist()
    index = [int(k) for k in p50.index]
    for i in range(max(1, len(within) - run + 1)):
        window = within[i : i + run]
        if window and all(window):
            return index[i] - 1
    return None
