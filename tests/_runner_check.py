"""One check that a pool keeps the :class:`~fnrun_nb.front.Runner` protocol, for each
kind of pool (``Pool`` in test_runner, ``DaskPool`` in test_dask): the members the
front-ends use exist, ``map`` takes every keyword the protocol names and means it."""

from __future__ import annotations

import inspect
from typing import Any

from fnrun_nb.front import Runner
from fnrun_nb.settings import PoolSettings


def _keywords(func: Any) -> set[str]:
    return {
        p.name for p in inspect.signature(func).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    }


def assert_is_runner(runner: Any, settings: PoolSettings) -> None:
    """``runner`` keeps the Runner protocol and runs with ``settings``; it runs one small
    batch (of any handler that answers every input)."""
    assert isinstance(runner, Runner)  # every member is there
    assert runner.settings == settings
    assert (runner.workers, runner.timeout) == (settings.workers, settings.timeout)
    assert not runner.closed and isinstance(runner.name, str) and runner.command
    # Every keyword the protocol's map names is one the runner's map takes by name, or
    # takes as **options and hands on (run below).
    params = inspect.signature(runner.map).parameters.values()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    assert takes_any or _keywords(Runner.map) <= _keywords(runner.map)
    batch = runner.map(
        [b"a", b"b"], env={"K": "v"}, repeat=2, concurrency=1, rate=None,
        keep_data=False, progress=False, monitor=False,
    )
    assert runner.last_batch is batch
    df = batch.df
    assert df["outcome"].tolist() == ["ok"] * 4
    assert df["input_index"].tolist() == [0, 1, 0, 1]
    assert df["repeat"].tolist() == [0, 0, 1, 1]
    assert df["env_in"].tolist() == [{"K": "v"}] * 4
    assert df["data"].isna().all()  # keep_data=False
    # A batch records the settings it ran with, under the same names.
    for name, value in settings.as_dict().items():
        assert batch.config[name] == value, name
    assert batch.config["concurrency"] == 1
