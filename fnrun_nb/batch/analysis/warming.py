"""Warm-up (``batch.warmup()``): cold versus warm calls, and after how many calls on a
process the service time settles."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from .frame import ok_rows, require
from .latency import format_percent

__all__ = ["WarmupReport", "warmup"]


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
    require(df, [metric, "call_on_worker", "cold"])
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
