"""``fnrun_nb.experiment``: handler versions times an env grid, interleaved, one verdict per arm.

::

    variants {name: command}  ×  env_grid {NAME: [values]}  ─▶  arms (design order)
    check every argument                         (nothing started yet)
    one warm Pool per variant ─▶ _rounds.run_rounds(shuffled(seed))
        round r: every arm once, one at a time, in a seeded random order
    runs ─▶ one Batch (arm, variant, round, grid columns) ─▶ Experiment

It starts pools, so it sits above the front layer, beside ``versus`` (``compare``),
whose rounds runner it shares; the statistics are
:class:`fnrun_nb.batch.experiment.Experiment`'s.
"""

from __future__ import annotations

import itertools
import random
import shlex
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import pandas as pd

from ._rounds import Arm, Run, run_rounds, shuffled
from .batch import Batch
from .batch.experiment import (
    CONFIG_KEY,
    RESERVED_NAMES,
    ArmSpec,
    Experiment,
    arm_name,
)
from .batch.inputs import plan_batch
from .batch.schema import COLUMNS, OPTIONAL_COLUMNS
from .errors import Interrupted
from .front import Pool

__all__ = ["ExperimentInterrupted", "experiment"]

# The metrics an experiment can rank by: the record's float columns; the optional ones
# exist only with the pool option that records them.
_METRIC_OPTION = {
    "handler_ms": "handler_timing",
    "transport_ms": "handler_timing",
    "cpu_ms": "resources",
    "rss_mib": "resources",
    "peak_rss_mib": "resources",
}
_METRICS = [n for n, d in {**COLUMNS, **OPTIONAL_COLUMNS}.items() if d == "float64"]


class ExperimentInterrupted(Interrupted):
    """Ctrl-C stopped an experiment: every pool is closed, and ``partial`` (also
    ``experiment``) holds what ran (an :class:`~fnrun_nb.batch.experiment.Experiment`
    whose ``interrupted`` is True, the interrupted arm's calls included), or ``None``
    when the interrupt came before the first measured call.  An
    :class:`~fnrun_nb.errors.Interrupted`, so a ``KeyboardInterrupt``: it stops a
    script as Ctrl-C should; in IPython the partial experiment is
    ``sys.last_value.partial``."""

    def __init__(self, experiment: Experiment | None) -> None:
        if experiment is None:
            message = "experiment interrupted before its first measured call; nothing to keep"
        else:
            calls = len(experiment.batch)
            message = (
                f"experiment interrupted after {calls} measured call{'s' * (calls != 1)}; "
                "the partial experiment is kept in .partial"
            )
        super().__init__(message, experiment)

    @property
    def experiment(self) -> Experiment | None:
        """The partial experiment: the same object as ``partial``."""
        return self.partial  # type: ignore[no-any-return]


def _variants(variants: Any) -> dict[str, list[str] | str]:
    if isinstance(variants, str):
        return {variants: variants}
    if isinstance(variants, Sequence):
        if not variants or not all(isinstance(a, str) for a in variants):
            raise TypeError("a single command given as a list must be a non-empty list of str")
        return {shlex.join(variants): list(variants)}
    if not isinstance(variants, Mapping):
        raise TypeError(
            "variants must be a dict of name -> command, or one command, "
            f"not {type(variants).__name__}"
        )
    if not variants:
        raise ValueError("variants is empty: give at least one handler command")
    out: dict[str, list[str] | str] = {}
    for name, command in variants.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a variant's name must be a non-empty str, got {name!r}")
        if isinstance(command, str):
            out[name] = command
        elif (
            isinstance(command, Sequence) and command
            and all(isinstance(a, str) for a in command)
        ):
            out[name] = list(command)
        else:
            raise TypeError(f"variant {name!r}: the command must be a str or a list of str")
    return out


def _grid(env_grid: Any) -> dict[str, list[str]]:
    if env_grid is None:
        return {}
    if not isinstance(env_grid, Mapping):
        raise TypeError(
            f"env_grid must be a dict of env name -> values, not {type(env_grid).__name__}"
        )
    out: dict[str, list[str]] = {}
    for name, values in env_grid.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(f"env_grid: {name!r} is not an env name")
        if name in RESERVED_NAMES:
            raise ValueError(
                f"env_grid: {name!r} clashes with the batch column of that name; "
                "rename the env variable"
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"env_grid[{name!r}] must be a non-empty list of values")
        texts = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise TypeError(
                    f"env_grid[{name!r}]: values must be str (or int), got {type(v).__name__} {v!r}"
                )
            texts.append(str(v))
        if len(set(texts)) != len(texts):
            raise ValueError(f"env_grid[{name!r}] repeats a value: {texts}")
        out[name] = texts
    return out


def _check_scalars(
    rounds: Any, metric: Any, threshold: Any, seed: Any, pool_options: Mapping[str, Any]
) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {', '.join(_METRICS)}; got {metric!r}")
    option = _METRIC_OPTION.get(metric)
    if option is not None and not pool_options.get(option):
        raise ValueError(f"metric {metric!r} is recorded only with {option}=True")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
        0 <= threshold < 1
    ):
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")


def experiment(
    variants: Mapping[str, str | Sequence[str]] | str | Sequence[str],
    inputs: Iterable[Any],
    *,
    env_grid: Mapping[str, Sequence[str | int]] | None = None,
    rounds: int = 5,
    workers: int = 2,
    timeout: float = 30.0,
    baseline: str | None = None,
    metric: str = "service_ms",
    threshold: float = 0.05,
    seed: int | None = None,
    env: Mapping[str, str] | None = None,
    concurrency: int | None = None,
    **pool_options: Any,
) -> Experiment:
    """Run every arm (variant × grid combination) over the same ``inputs`` and judge it.

    ``variants`` maps a name to a handler command (a str or argv list); a single
    command is one variant named after it.  ``env_grid`` maps env names to lists of
    values: every combination is sent as per-call env, merged over each input's own
    env and ``env`` (the grid's value wins).  An arm is named by its variant then its
    grid values, ``"v2 THREADS=4 CACHE=on"``; arms are in *design order*: the
    variants' order times the grid's (``itertools.product``), and the default
    ``baseline`` is the first.

    How it runs: each variant gets one :class:`~fnrun_nb.front.Pool` of ``workers``
    processes (per-call deadline ``timeout``; ``pool_options`` such as ``max_wait``,
    ``cwd``, ``process_env`` go to every pool) for the whole experiment.  Every arm is
    warmed (each worker of its pool serves the arm's calls) before any call is
    measured; warm-up calls are not recorded.  Then ``rounds`` rounds: each runs every
    arm once over all the inputs, one arm at a time (``concurrency`` calls in flight,
    default ``workers``), in an order shuffled per round by ``random.Random(seed)``;
    rounds never overlap.  ``seed=None`` draws a seed, kept as ``Experiment.seed``, so
    any run can be repeated; the seed also drives the bootstrap.

    Returns an :class:`~fnrun_nb.batch.experiment.Experiment` (``batch``, ``table()``,
    ``best()``, ``effects()``, ``plot()``); ``metric`` (a float column of the record)
    and ``threshold`` (the smallest relative difference that matters) set its
    verdicts.  All pools are closed on return, on error and on Ctrl-C, which raises
    :class:`ExperimentInterrupted` (an :class:`~fnrun_nb.errors.Interrupted`, so a
    ``KeyboardInterrupt``) whose ``partial`` is the experiment so far
    (``interrupted=True``; ``None`` before the first measured call).

    Raises before any process starts: ``ValueError`` for no variants or inputs, a
    grid name that clashes with a batch column (``status``, ``arm``, ``round``...),
    an empty or repeated grid value list, ``rounds`` < 1, a threshold outside [0, 1),
    an unknown metric (or one whose recording option is off), an unknown
    ``baseline``; ``TypeError`` for arguments of the wrong type and malformed inputs
    (as ``Pool.map``).  ``HandlerStartError`` when a handler cannot start.
    """
    commands = _variants(variants)
    grid = _grid(env_grid)
    _check_scalars(rounds, metric, threshold, seed, pool_options)
    items = list(inputs)
    if not items:
        raise ValueError("experiment needs at least one input")
    plan = plan_batch(
        items, env=env, repeat=1, concurrency=concurrency, rate=None, keep_data=True,
        progress=False, workers=workers,
    )
    specs = [
        ArmSpec(arm_name(variant, env_values), variant, env_values)
        for variant in commands
        for env_values in (
            dict(zip(grid, combo)) for combo in itertools.product(*grid.values())
        )
    ]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two arms have the same name; rename the variants: {names}")
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline: no arm named {baseline!r}; the arms are {names}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    variant_index = {v: i for i, v in enumerate(commands)}
    arms = [
        Arm(s.name, variant_index[s.variant], _arm_items(plan.datas, plan.env_ins, s.env))
        for s in specs
    ]
    order = shuffled(seed)(rounds, len(arms))

    def finish(runs: list[Run], interrupted: bool) -> Experiment:
        design = Experiment(
            _joined(runs, specs, grid, interrupted),
            variants={v: c if isinstance(c, str) else shlex.join(c) for v, c in commands.items()},
            grid=grid, arms=specs, baseline=baseline or names[0], metric=metric,
            threshold=float(threshold), rounds=rounds, seed=seed,
            order=[[names[k] for k in o] for o in order],
        )
        design.batch.config[CONFIG_KEY] = design.design()
        return design

    runs: list[Run] = []
    try:
        with ExitStack() as stack:
            pools = [
                stack.enter_context(Pool(c, workers=workers, timeout=timeout, **pool_options))
                for c in commands.values()
            ]
            run_rounds(pools, arms, order, runs, concurrency=concurrency)
    except KeyboardInterrupt:
        # from None: the frames of the KeyboardInterrupt (in a runner) say nothing to
        # the user; it stays reachable as __context__.
        raise ExperimentInterrupted(finish(runs, True) if runs else None) from None
    return finish(runs, False)


def _arm_items(
    datas: list[bytes], env_ins: list[dict[str, str]], grid_env: Mapping[str, str]
) -> list[Any]:
    """The inputs as ``map`` gets them for one arm: the grid's values over each
    input's env (which already holds the common ``env`` under the input's own)."""
    if not grid_env and not any(env_ins):
        return list(datas)
    return [(d, {**e, **grid_env}) for d, e in zip(datas, env_ins)]


def _joined(
    runs: list[Run], specs: list[ArmSpec], grid: Mapping[str, Sequence[str]], interrupted: bool
) -> Batch:
    """Every run's rows, in the order they ran, as one finished batch with the
    experiment's columns."""
    frames = []
    for run in runs:
        spec = specs[run.arm]
        frame = run.batch.df.copy()
        frame["arm"] = spec.name
        frame["variant"] = spec.variant
        frame["round"] = run.round
        for name in grid:
            frame[name] = spec.env[name]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    for name in ("arm", "variant", *grid):
        df[name] = df[name].astype(object)
    df["round"] = df["round"].astype("int64")
    first = runs[0].batch
    return Batch.from_frame(
        df,
        command=None,
        handler="experiment: " + ", ".join(dict.fromkeys(s.variant for s in specs)),
        config=dict(first.config),
        workers=first.workers,
        wall_s=sum(r.batch.wall_s or 0.0 for r in runs),
        started_at=first.started_at,
        interrupted=interrupted,
    )
