"""``fnrun_nb.compare``: two real handlers whose speed differs by a designed amount."""

from __future__ import annotations

import itertools

import pytest
from conftest import TEST_HANDLERS

import fnrun_nb
from fnrun_nb.batch.comparison import Comparison

DELAY = TEST_HANDLERS / "delay.py"
INPUTS = [f"input {i}" for i in range(12)]


def test_compare_detects_a_designed_slowdown_in_the_right_direction() -> None:
    # 2 ms against 12 ms of sleep per call: B is several times slower, whatever the noise.
    c = fnrun_nb.compare(f"{DELAY} 0.002", f"{DELAY} 0.012", INPUTS, rounds=3, workers=2)
    assert isinstance(c, Comparison)
    assert c.direction == "slower"
    assert c.verdict.startswith("B is ") and "x slower (95% CI " in c.verdict
    assert 2.5 < c.ci[0] <= c.ratio <= c.ci[1]
    assert c.n == (36, 36)
    a, b = c.batches  # type: ignore[misc]
    # Each side's rounds are one batch, repeat saying which round, same inputs.
    assert sorted(a.df["repeat"].unique()) == [0, 1, 2]
    assert sorted(b.df["input_index"].unique()) == list(range(12))
    assert a.command[-1] == "0.002" and b.command[-1] == "0.012"
    # Both pools were warm: no measured call was the first on its process.
    assert not a.df["cold"].any() and not b.df["cold"].any()
    assert c.per_input()["ratio"].min() > 2


def test_rounds_run_interleaved_a_b_then_b_a() -> None:
    c = fnrun_nb.compare(f"{DELAY} 0", f"{DELAY} 0", INPUTS[:4], rounds=4, workers=2)
    # Each (side, round) as the span of its calls, first start to last finish, in the
    # order they ran.
    spans = []
    for label, batch in zip("AB", c.batches):  # type: ignore[arg-type]
        for r, group in batch.df.groupby("repeat"):
            spans.append((group["started"].min(), group["finished"].max(), f"{label}{r}"))
    spans.sort()
    assert [name for _, _, name in spans] == ["A0", "B0", "B1", "A1", "A2", "B2", "B3", "A3"]
    # One side's round at a time: each starts after the previous one finished.
    for (_, finished, _), (started, _, name) in itertools.pairwise(spans):
        assert finished < started, name


def test_compare_the_other_way_round_says_faster() -> None:
    c = fnrun_nb.compare(
        f"{DELAY} 0.012", f"{DELAY} 0.002", INPUTS[:6], rounds=2, workers=2,
        labels=("old", "new"),
    )
    assert c.direction == "faster"
    assert c.verdict.startswith("new is ") and "x faster" in c.verdict


def test_compare_bad_arguments_start_no_process(echo_handler: str) -> None:
    with pytest.raises(ValueError, match="rounds"):
        fnrun_nb.compare(echo_handler, echo_handler, INPUTS, rounds=0)
    with pytest.raises(ValueError, match="at least one input"):
        fnrun_nb.compare(echo_handler, echo_handler, [])
    with pytest.raises(fnrun_nb.HandlerStartError):
        fnrun_nb.compare(echo_handler, "./no/such/handler", INPUTS, rounds=1, workers=1)
