"""``fnrun_nb.compare``: two handler commands head to head, the honest way.

It builds two :class:`~fnrun_nb.front.Pool` objects, so it sits above the front
layer.  The rounds are :mod:`fnrun_nb._rounds`' (shared with ``experiment``, here with
the alternating order), the statistics :class:`fnrun_nb.batch.comparison.Comparison`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import pandas as pd

from ._rounds import Arm, Run, alternate, run_rounds
from .batch import Batch
from .batch.comparison import Comparison, compare_frames
from .front import Pool

__all__ = ["compare"]


def _joined(pool: Pool, rounds: list[Batch]) -> Batch:
    """One side's rounds as one finished batch, ``repeat`` saying which round."""
    frames = []
    for r, batch in enumerate(rounds):
        frame = batch.df.copy()
        frame["repeat"] = r
        frames.append(frame)
    return Batch.from_frame(
        pd.concat(frames, ignore_index=True),
        command=pool.command,
        handler=pool.name,
        config=rounds[0].config,
        workers=pool.workers,
        wall_s=sum(b.wall_s or 0.0 for b in rounds),
        started_at=rounds[0].started_at,
        inputs=rounds[0].inputs,  # every round runs the same inputs
    )


def compare(
    command_a: str | Sequence[str],
    command_b: str | Sequence[str],
    inputs: Iterable[Any],
    rounds: int = 10,
    *,
    metric: str = "service_ms",
    threshold: float = 0.05,
    env: Mapping[str, str] | None = None,
    concurrency: int | None = None,
    labels: tuple[str, str] = ("A", "B"),
    seed: int = 0,
    **pool_options: Any,
) -> Comparison:
    """Run the same ``inputs`` through handlers A and B and compare ``metric``.

    Why not two batches?  Two batches taken minutes apart measure the machine as much
    as the handler: CPU frequency, other processes, caches and thermal state drift
    over minutes, and that drift lands entirely on whichever side ran second.  Here
    both pools start and are warmed (every worker has served a call) before any call
    is measured, then A and B take turns in ``rounds`` interleaved rounds over the
    same inputs, in the order A B, B A, A B... so drift falls on both sides alike and
    a per-input diff is like for like.  Each side's rounds are one batch
    (``repeat`` = round); the result's ``batches`` holds both.

    ``pool_options`` go to both ``Pool``s (``workers``, ``timeout``, ``max_wait``,
    ``cwd``...); ``env`` and ``concurrency`` to every ``map``.  ``metric``,
    ``threshold``, ``labels`` and ``seed`` are those of ``Batch.compare``.  Both pools
    are closed on return, on error and on Ctrl-C (which propagates).

    Raises ``ValueError`` for ``rounds`` < 1 or no inputs, ``HandlerStartError`` when
    a handler cannot start, and what ``Pool.map`` and ``Batch.compare`` raise for bad
    arguments.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    items = list(inputs)
    if not items:
        raise ValueError("compare needs at least one input")
    commands = (command_a, command_b)
    runs: list[Run] = []
    with ExitStack() as stack:
        pools = [stack.enter_context(Pool(c, **pool_options)) for c in commands]
        arms = [Arm(label, side, items) for side, label in enumerate(labels)]
        # A B, then B A: a steady drift within a pair of rounds favours neither side.
        run_rounds(pools, arms, alternate(rounds, 2), runs, env=env, concurrency=concurrency)
        sides = [
            _joined(pool, [run.batch for run in runs if run.arm == side])
            for side, pool in enumerate(pools)
        ]
    a, b = sides
    return compare_frames(
        a.df, b.df, metric, threshold, labels=labels, seed=seed, batches=(a, b)
    )
