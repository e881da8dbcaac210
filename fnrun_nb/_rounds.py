"""Rounds of arms over warm pools: the runner under ``compare`` and ``experiment``.

::

    arms (which pool, the items each call gets) ─▶ warm(): every worker of the
    arm's pool serves the arm's calls, unrecorded
    schedule(rounds, arms): the arm order of every round (a policy)
        round 0:  arm k ─▶ pool.map(arm k's items) ─▶ Run(0, k, batch) ─▶ runs
                  arm j ─▶ ...                    (one arm at a time)
        round 1:  ...                             (rounds never overlap)

Measuring two or more handlers the honest way means every pool warm before any call
counts, the same inputs for every arm, and arms taking turns so that drift of the
machine (CPU frequency, other processes, thermal state) falls on all of them alike
instead of on whichever ran last.  The order of the arms within a round is a policy:
:func:`alternate` (A B, B A, ...: ``compare``) or :func:`shuffled` (a random order per
round from a seed: ``experiment``).

Ctrl-C: ``pool.map`` records the interrupted batch (its unrun calls ``cancelled``) and
re-raises; :func:`run_rounds` appends that partial batch to ``runs`` before the
``KeyboardInterrupt`` goes on, so the caller, who owns ``runs`` and the pools, keeps
every row measured so far.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .batch import Batch
    from .front import Pool

__all__ = ["Arm", "Run", "Schedule", "alternate", "run_rounds", "shuffled", "warm"]

# Warm-up passes tried before giving up on reaching every worker; with a fast handler
# one worker can take a whole pass, so a pass or two more may be needed.
WARMUP_PASSES = 5

Schedule = Callable[[int, int], list[list[int]]]
"""A round-order policy: ``(rounds, arms) -> order``, ``order[r]`` the arm indices of
round ``r`` in the order they run (each arm exactly once)."""


@dataclass(frozen=True)
class Arm:
    """One thing measured: ``items`` (what ``Pool.map`` gets, the same inputs for every
    arm, each with the arm's own env already merged in) run on ``pools[pool]``."""

    name: str
    pool: int
    items: Sequence[Any]


class Run(NamedTuple):
    """One arm's batch in one round (interrupted when Ctrl-C came during it)."""

    round: int
    arm: int
    batch: Batch


def alternate(rounds: int, arms: int) -> list[list[int]]:
    """Arms in their order on even rounds and reversed on odd ones (A B, B A, A B...):
    a steady drift within a pair of rounds favours no arm."""
    forward = list(range(arms))
    return [forward if r % 2 == 0 else forward[::-1] for r in range(rounds)]


def shuffled(seed: int) -> Schedule:
    """A policy drawing each round's order uniformly at random, repeatably from ``seed``
    (``random.Random(seed)``: the same seed, rounds and arms give the same orders)."""

    def schedule(rounds: int, arms: int) -> list[list[int]]:
        rng = random.Random(seed)
        return [rng.sample(range(arms), arms) for _ in range(rounds)]

    return schedule


def warm(pool: Pool, items: Sequence[Any], env: Mapping[str, str] | None) -> None:
    """Run passes over ``items`` (unrecorded) until every worker of ``pool`` has served
    one of them, or :data:`WARMUP_PASSES` passes ran (a handler whose calls fail may
    never reach every worker; its failures show in the measured rounds)."""
    repeat = max(1, math.ceil(pool.workers / len(items)))
    served: set[int] = set()
    for _ in range(WARMUP_PASSES):
        batch = pool.map(items, env=env, repeat=repeat, progress=False)
        served.update(int(w) for w in batch.df["worker"].dropna())
        if len(served) >= pool.workers:
            return


def run_rounds(
    pools: Sequence[Pool],
    arms: Sequence[Arm],
    order: Sequence[Sequence[int]],
    runs: list[Run],
    *,
    env: Mapping[str, str] | None = None,
    concurrency: int | None = None,
) -> None:
    """Warm every arm, then run ``order`` (see :data:`Schedule`): round by round, one
    arm at a time, each arm's ``items`` once through its pool; append a :class:`Run`
    per arm and round to ``runs`` in the order they ran.

    ``env`` and ``concurrency`` go to every ``map``.  On ``KeyboardInterrupt`` the
    interrupted arm's partial batch is appended before it propagates; other errors
    (a pool closed under it) propagate as they are.
    """
    for arm in arms:
        warm(pools[arm.pool], arm.items, env)
    for r, arm_order in enumerate(order):
        for k in arm_order:
            pool = pools[arms[k].pool]
            before = pool.last_batch
            try:
                batch = pool.map(arms[k].items, env=env, concurrency=concurrency, progress=False)
            except KeyboardInterrupt:
                partial = pool.last_batch
                if partial is not None and partial is not before:
                    runs.append(Run(r, k, partial))
                raise
            runs.append(Run(r, k, batch))
