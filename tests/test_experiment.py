"""``fnrun_nb.experiment``: real handlers whose speed is set by their process env (the
version) and by each call's env (the grid), with differences planted large enough that
the verdict categories cannot flip by noise on a busy machine."""

from __future__ import annotations

import itertools
import math
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from _procs import interrupt_when_ready
from conftest import TEST_HANDLERS

import fnrun_nb
from fnrun_nb import Batch, Experiment
from fnrun_nb.batch import OUTCOMES
from fnrun_nb._rounds import alternate, shuffled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TUNABLE = str(TEST_HANDLERS / "tunable.py")


def version(base_ms: float, **process_env: str) -> list[str]:
    """A handler "version": the tunable handler with its process env set by ``env``."""
    settings = {"TUNABLE_BASE_MS": str(base_ms), **process_env}
    return ["env", *(f"{k}={v}" for k, v in settings.items()), sys.executable, TUNABLE]


@pytest.fixture(scope="module")
def planted() -> Experiment:
    """Two versions (10 ms and 12 ms: a planted 2 ms difference) times THREADS (no
    effect) times CACHE (off adds 20 ms): 8 arms, 5 rounds of 8 inputs each."""
    return fnrun_nb.experiment(
        {"base": version(10), "plus2": version(12)},
        [f"input {i}" for i in range(8)],
        env_grid={"THREADS": [1, 4], "CACHE": ["on", "off"]},
        rounds=5, workers=2, seed=11,
    )


def test_the_table_ranks_the_arms_in_the_known_order(planted: Experiment) -> None:
    table = planted.table()
    assert list(table.columns) == [
        "arm", "variant", "THREADS", "CACHE", "calls", "failures", "median", "p99",
        "ratio", "ci_low", "ci_high", "verdict", "direction",
    ]
    # Each pair differs only in THREADS, which does nothing: its order is noise.
    groups = [set(table["arm"][i : i + 2]) for i in range(0, 8, 2)]
    assert groups == [
        {"base THREADS=1 CACHE=on", "base THREADS=4 CACHE=on"},
        {"plus2 THREADS=1 CACHE=on", "plus2 THREADS=4 CACHE=on"},
        {"base THREADS=1 CACHE=off", "base THREADS=4 CACHE=off"},
        {"plus2 THREADS=1 CACHE=off", "plus2 THREADS=4 CACHE=off"},
    ]
    assert table["median"].is_monotonic_increasing
    assert (table["calls"] == 40).all() and (table["failures"] == 0).all()
    assert planted.best() == table["arm"].iloc[0]
    assert planted.baseline == "base THREADS=1 CACHE=on"  # the first arm of the product


def test_the_verdicts_find_the_planted_2ms_and_no_difference_for_twins(
    planted: Experiment,
) -> None:
    t = planted.table().set_index("arm")
    base = t.loc["base THREADS=1 CACHE=on"]
    assert base["verdict"] == "baseline" and base["ratio"] == 1.0
    twin = t.loc["base THREADS=4 CACHE=on"]
    assert twin["direction"] == "same"
    assert twin["verdict"] == "no difference beyond 5%"
    assert 1 / 1.05 <= twin["ci_low"] <= twin["ratio"] <= twin["ci_high"] <= 1.05
    for threads in (1, 4):
        plus2 = t.loc[f"plus2 THREADS={threads} CACHE=on"]
        assert plus2["direction"] == "slower"
        # Two decimals at least, more when two would show the interval as one value.
        m = re.fullmatch(r"\d+\.\d+x slower \(95% CI (\d+\.(\d+))-(\d+\.\d+)\)", plus2["verdict"])
        assert m is not None, plus2["verdict"]
        places = len(m.group(2))
        assert places >= 2 and m.group(1) != m.group(3), plus2["verdict"]
        assert m.group(1) == f"{plus2['ci_low']:.{places}f}", plus2["verdict"]
        assert m.group(3) == f"{plus2['ci_high']:.{places}f}", plus2["verdict"]
        assert 1.05 < plus2["ci_low"] <= plus2["ratio"] <= plus2["ci_high"]
    assert (t.filter(like="CACHE=off", axis=0)["direction"] == "slower").all()


def test_effects_attribute_the_differences_to_the_right_factors(planted: Experiment) -> None:
    e = planted.effects()
    assert list(e.columns) == [
        "factor", "level", "ratio", "ci_low", "ci_high", "cells", "verdict", "direction"
    ]
    effects = {(r.factor, r.level): r for r in e.itertuples()}
    assert list(effects) == [
        ("THREADS", "1"), ("THREADS", "4"), ("CACHE", "on"), ("CACHE", "off"),
        ("variant", "base"), ("variant", "plus2"),
    ]
    assert effects[("THREADS", "1")].verdict == "baseline"
    assert effects[("THREADS", "4")].direction == "same"
    assert effects[("CACHE", "off")].direction == "slower"
    assert effects[("CACHE", "off")].ratio > 2  # 20 ms on top of 10-12 ms
    assert effects[("variant", "plus2")].direction == "slower"
    assert all(effects[k].cells == 4 for k in effects)
    # The ratio is the geometric mean of the medians' ratios over the 4 cells.
    med = planted.table().set_index("arm")["median"]
    cells = [f"THREADS={t} CACHE={c}" for t in (1, 4) for c in ("on", "off")]
    expected = math.exp(
        sum(math.log(med[f"plus2 {c}"] / med[f"base {c}"]) for c in cells) / 4
    )
    assert effects[("variant", "plus2")].ratio == pytest.approx(expected)


def test_the_batch_holds_every_measured_call_with_the_arm_columns(planted: Experiment) -> None:
    df = planted.batch.df
    assert len(df) == 8 * 5 * 8  # arms x rounds x inputs: no warm-up call
    for name in ("arm", "variant", "round", "THREADS", "CACHE"):
        assert name in df.columns
    assert str(df["round"].dtype) == "int64" and sorted(df["round"].unique()) == [0, 1, 2, 3, 4]
    assert not df["cold"].any()  # every arm was warm before its first measured call
    # Every call got its arm's grid values, which the handler answered with.
    for row in df.sample(20, random_state=0).itertuples():
        assert row.data.decode().startswith(f"CACHE={row.CACHE} THREADS={row.THREADS} ")
        assert row.env_in == {"THREADS": row.THREADS, "CACHE": row.CACHE}
    assert set(df.groupby("arm")["input_index"].nunique()) == {8}


def test_rounds_interleave_one_arm_at_a_time_in_the_seeded_order(planted: Experiment) -> None:
    df = planted.batch.df
    spans = sorted(
        (g["started"].min(), g["finished"].max(), r, arm)
        for (r, arm), g in df.groupby(["round", "arm"])
    )
    # The arms ran in the recorded order, round after round...
    assert [(r, arm) for _, _, r, arm in spans] == [
        (r, arm) for r, order in enumerate(planted.order) for arm in order
    ]
    # ... one at a time: each starts after the previous one finished.
    for (_, finished, *_), (started, _, r, arm) in itertools.pairwise(spans):
        assert finished < started, (r, arm)
    # The order is the seed's shuffle, a different one per round.
    names = [a.name for a in planted.arms]
    assert planted.order == [[names[k] for k in o] for o in shuffled(11)(5, 8)]
    assert len({tuple(o) for o in planted.order}) == 5


def test_the_round_order_policies() -> None:
    assert shuffled(3)(6, 5) == shuffled(3)(6, 5)  # repeatable from its seed
    assert shuffled(3)(6, 5) != shuffled(4)(6, 5)
    for order in shuffled(3)(6, 5):
        assert sorted(order) == [0, 1, 2, 3, 4]
    assert alternate(4, 2) == [[0, 1], [1, 0], [0, 1], [1, 0]]  # compare's A B, B A


def test_the_seed_makes_the_run_repeatable_and_none_draws_one() -> None:
    runs = [
        fnrun_nb.experiment(
            {"a": version(0), "b": version(0)}, ["x", "y"], env_grid={"K": ["1", "2"]},
            rounds=3, workers=1, seed=seed,
        )
        for seed in (5, 5, None)
    ]
    assert runs[0].order == runs[1].order and runs[0].seed == runs[1].seed == 5
    assert isinstance(runs[2].seed, int)
    names = [a.name for a in runs[2].arms]
    assert runs[2].order == [[names[k] for k in o] for o in shuffled(runs[2].seed)(3, 4)]


def test_a_saved_experiment_loads_back_with_the_same_table(
    planted: Experiment, tmp_path: Path
) -> None:
    path = planted.batch.save(tmp_path / "experiment.parquet")
    again = Experiment.from_batch(Batch.load(path))
    assert again.order == planted.order and again.baseline == planted.baseline
    pd.testing.assert_frame_equal(again.table(), planted.table())
    pd.testing.assert_frame_equal(again.effects(), planted.effects())
    with pytest.raises(ValueError, match="not an experiment"):
        Experiment.from_batch(Batch.from_frame(planted.batch.df.copy()))


def test_another_baseline_and_the_reprs(planted: Experiment) -> None:
    t = planted.table(baseline="plus2 THREADS=1 CACHE=on").set_index("arm")
    assert t.loc["plus2 THREADS=1 CACHE=on", "verdict"] == "baseline"
    assert t.loc["base THREADS=1 CACHE=on", "direction"] == "faster"
    assert "x faster (95% CI " in t.loc["base THREADS=1 CACHE=on", "verdict"]
    with pytest.raises(ValueError, match="no arm named 'nope'"):
        planted.table(baseline="nope")
    text = repr(planted)
    assert text.startswith("Experiment: 8 arms, 5 rounds over 8 inputs; service_ms")
    assert len(text.splitlines()) == 2 + 8
    assert "base THREADS=4 CACHE=on" in planted._repr_html_()


@pytest.fixture(scope="module")
def drawn(planted: Experiment) -> Iterator[Figure]:
    """The plot, drawn before the leak check starts: matplotlib opens its font files
    on first use and keeps them open for the process's life."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = planted.plot()
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def test_plot_draws_one_distribution_per_arm(planted: Experiment, drawn: Figure) -> None:
    ax = drawn.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(planted.table()["arm"])[::-1]
    assert len(ax.get_yticklabels()) == 8
    assert ax.get_title() == f"best: {planted.best()}"
    assert ax.get_xlabel() == "service_ms (ok calls)"


def test_an_arm_that_mostly_fails_is_last_unranked_with_its_failures() -> None:
    exp = fnrun_nb.experiment(
        {"broken": version(0, TUNABLE_CRASH="1"), "ok": version(5), "fast": version(0)},
        ["a", "b", "c"], rounds=2, workers=1, seed=1, max_wait=30,
    )
    t = exp.table()
    assert list(t["arm"]) == ["fast", "ok", "broken"]
    broken = t.iloc[-1]
    assert math.isnan(broken["ratio"]) and broken["direction"] == "not ranked"
    # Every call of the broken version fails: "crashed", or "start_failed" for a call
    # that found the pool judging the handler unable to start (no process of it has
    # answered or stayed up a second yet: timing decides which).
    outcomes = exp.batch.df.query("arm == 'broken'")["outcome"].astype(str)
    assert len(outcomes) == 6 and set(outcomes) <= {"crashed", "start_failed"}
    counts = ", ".join(f"{n} {o}" for o in OUTCOMES if (n := int((outcomes == o).sum())))
    failed = f"not ranked: 6 of 6 calls failed ({counts})"
    assert broken["verdict"] == f"baseline, {failed}"
    # The baseline (the first arm) failed, so no other arm gets a ratio...
    assert (t["direction"].iloc[:2] == "no ratio").all()
    assert t["verdict"].iloc[0] == "no ratio: the baseline failed 6 of 6 calls"
    # ... until another baseline is chosen.
    t = exp.table(baseline="ok").set_index("arm")
    assert t.loc["fast", "direction"] == "faster"
    assert t.loc["broken", "verdict"] == failed
    assert exp.best() == "fast"
    effects = exp.effects().set_index("level")
    assert effects.loc["ok", "direction"] == "no ratio" and effects.loc["ok", "cells"] == 0


def test_bad_arguments_raise_before_any_process_starts() -> None:
    missing = "./no/such/handler"  # would raise HandlerStartError if a pool started
    for name in ("status", "arm", "round", "variant", "service_ms", "handler_ms"):
        with pytest.raises(ValueError, match=f"'{name}' clashes with the batch column"):
            fnrun_nb.experiment(missing, ["x"], env_grid={name: ["1", "2"]})
    cases = [
        ({"env_grid": {"K": []}}, ValueError, "non-empty list"),
        ({"env_grid": {"K": ["1", "1"]}}, ValueError, "repeats a value"),
        ({"env_grid": {"K": "12"}}, ValueError, "non-empty list"),
        ({"env_grid": {"A=B": ["1"]}}, ValueError, "not an env name"),
        ({"env_grid": {"K": [1.5]}}, TypeError, "values must be str"),
        ({"rounds": 0}, ValueError, "rounds"),
        ({"threshold": 1.0}, ValueError, "threshold"),
        ({"metric": "status"}, ValueError, "metric must be one of"),
        ({"metric": "handler_ms"}, ValueError, "handler_timing=True"),
        ({"baseline": "nope"}, ValueError, "no arm named 'nope'"),
        ({"seed": "1"}, TypeError, "seed"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            fnrun_nb.experiment(missing, ["x"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one input"):
        fnrun_nb.experiment(missing, [])
    with pytest.raises(ValueError, match="variants is empty"):
        fnrun_nb.experiment({}, ["x"])
    with pytest.raises(TypeError, match="expected bytes, str, Input"):
        fnrun_nb.experiment(missing, [1])
    with pytest.raises(fnrun_nb.HandlerStartError):
        fnrun_nb.experiment({"a": version(0), "missing": missing}, ["x"], rounds=1, workers=1)


def test_the_grid_wins_over_an_input_env_and_a_common_env() -> None:
    exp = fnrun_nb.experiment(
        version(0), [("x", {"CACHE": "mine", "OWN": "1"}), "y"],
        env_grid={"CACHE": ["on"]}, env={"CACHE": "common", "COMMON": "1"},
        rounds=1, workers=1, seed=0,
    )
    df = exp.batch.df
    assert df["env_in"].tolist() == [
        {"CACHE": "on", "COMMON": "1", "OWN": "1"}, {"CACHE": "on", "COMMON": "1"}
    ]
    assert df["arm"].unique().tolist() == [f"{' '.join(version(0))} CACHE=on"]


CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    import psutil
    import fnrun_nb
    from fnrun_nb.experiments import ExperimentInterrupted

    handler, mark = sys.argv[1], sys.argv[2]
    command = ["env", "TUNABLE_HANG_AFTER=2", f"TUNABLE_MARK={mark}", sys.executable, handler]
    other = [sys.executable, handler]  # a second pool, which must be closed too

    def announce():
        while not os.path.exists(mark):
            time.sleep(0.01)
        time.sleep(0.2)  # the hanging call is in flight
        print("READY", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        fnrun_nb.experiment(
            {"v": command, "w": other}, ["a", "b"], env_grid={"HANG": ["0", "1"]},
            rounds=3, workers=1, seed=int(sys.argv[3]),
        )
        report["raised"] = None
    except fnrun_nb.Interrupted as exc:
        report["raised"] = type(exc).__name__
        report["is_keyboard_interrupt"] = isinstance(exc, KeyboardInterrupt)
        report["is_experiment_interrupted"] = isinstance(exc, ExperimentInterrupted)
        report["alias"] = exc.partial is exc.experiment
        report["message"] = str(exc)
        exp = exc.partial
        report["interrupted"] = exp.interrupted
        df = exp.batch.df
        report["rows"] = df[["arm", "round", "outcome"]].astype(str).values.tolist()
        report["calls"] = exp.table().set_index("arm")["calls"].to_dict()
    report["t_back"] = time.time()
    report["children"] = len(psutil.Process().children(recursive=True))
    print(json.dumps(report), flush=True)
    """
)


def test_ctrl_c_keeps_the_partial_experiment_and_closes_every_pool(tmp_path: Path) -> None:
    # Arms: 0 "v HANG=0", 1 "v HANG=1", 2 "w HANG=0", 3 "w HANG=1".  "v HANG=1" hangs
    # on its first measured call (its two warm-up calls pass).  A seed whose first
    # round runs an arm of each pool before it: their calls must be kept.
    names = ["v HANG=0", "v HANG=1", "w HANG=0", "w HANG=1"]
    seed = next(
        s for s in range(1000)
        if (first := shuffled(s)(3, 4)[0]).index(1) == 2 and {first[0], first[1]} & {2, 3}
    )
    before = [names[k] for k in shuffled(seed)(3, 4)[0][:2]]
    mark = tmp_path / "hanging"
    report, err, t_sent = interrupt_when_ready(CHILD, TUNABLE, str(mark), str(seed))
    assert report["raised"] == "ExperimentInterrupted", err
    assert report["is_keyboard_interrupt"] and report["interrupted"]
    assert report["is_experiment_interrupted"] and report["alias"]
    assert report["message"] == (
        f"experiment interrupted after {len(report['rows'])} measured calls; "
        "the partial experiment is kept in .partial"
    )
    assert report["t_back"] - t_sent < 10  # the 60 s call was killed, not awaited
    # Every row measured before Ctrl-C is kept, and the interrupted arm's calls too.
    assert report["rows"] == [
        *([arm, "0", "ok"] for arm in before for _ in range(2)),
        ["v HANG=1", "0", "cancelled"], ["v HANG=1", "0", "cancelled"],
    ]
    assert report["calls"] == {name: 2 if name in before else 0 for name in names}
    assert report["children"] == 0  # every pool closed, every process reaped
