"""``fnrun_nb.Interrupted``: the one Ctrl-C contract of the long operations.  The
operations' own Ctrl-C tests (real SIGINTs against real handlers) are in
test_forensics_*.py and test_experiment.py; this is the exception itself."""

from __future__ import annotations

import pickle

import pytest

import fnrun_nb
from fnrun_nb import Interrupted
from fnrun_nb.experiments import ExperimentInterrupted


def test_it_is_a_keyboard_interrupt_carrying_the_partial_result() -> None:
    partial = {"kept": [1, 2]}
    with pytest.raises(KeyboardInterrupt) as caught:  # old code still catches it
        raise Interrupted("fuzz interrupted after 2 calls; kept in .partial", partial)
    exc = caught.value
    assert isinstance(exc, Interrupted) and not isinstance(exc, Exception)
    assert exc.partial is partial
    assert str(exc) == "fuzz interrupted after 2 calls; kept in .partial"
    assert fnrun_nb.Interrupted is Interrupted and "Interrupted" in fnrun_nb.__all__


def test_ipython_shows_the_message_and_its_notes_only() -> None:
    exc = Interrupted("replay interrupted after 0 of 3 attempts", None)
    assert exc._render_traceback_() == ["Interrupted: replay interrupted after 0 of 3 attempts"]
    exc.__notes__ = ["stored as rp"]
    assert exc._render_traceback_() == [
        "Interrupted: replay interrupted after 0 of 3 attempts", "stored as rp"
    ]


def test_it_pickles_with_its_partial_result() -> None:
    back = pickle.loads(pickle.dumps(Interrupted("msg", [b"x"])))
    assert type(back) is Interrupted and str(back) == "msg" and back.partial == [b"x"]
    exp = pickle.loads(pickle.dumps(ExperimentInterrupted(None)))
    assert type(exp) is ExperimentInterrupted and exp.partial is None and exp.experiment is None


def test_experiment_interrupted_is_an_interrupted_with_experiment_as_alias() -> None:
    exc = ExperimentInterrupted(None)
    assert isinstance(exc, Interrupted) and isinstance(exc, KeyboardInterrupt)
    assert exc.experiment is exc.partial is None
    assert str(exc) == "experiment interrupted before its first measured call; nothing to keep"
    assert exc._render_traceback_() == [f"ExperimentInterrupted: {exc}"]
