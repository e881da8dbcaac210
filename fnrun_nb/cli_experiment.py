"""``fnrun-nb experiment``: the command-line face of :func:`fnrun_nb.experiment`.

Thin like the rest of the CLI: parse the arguments, read the inputs, run the
experiment, print its table (text, or JSON with ``--json``).  ``cli.py`` only adds
this parser and dispatches to :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .cli_types import env_pair

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
arms:
  Every HANDLER is a variant (named by the command as given); every combination
  of the --env-grid values is sent as per-call env.  An arm is a variant with one
  combination, named like "./h.py THREADS=4 CACHE=on".  Each variant gets one warm
  pool; every round runs every arm over all the inputs, one arm at a time, in an
  order shuffled per round (--seed makes it repeatable).

inputs:
  One input per line of --inputs FILE (standard input when FILE is -); with
  --json-inputs each line is a JSON object as for `fnrun-nb run --json`.

output:
  The table, best arm first: calls, failures, median and p99 of the metric (ok
  calls), and a verdict against the baseline arm with a bootstrap 95% interval.
  --json prints it as JSON instead (with the main effects and the seed);
  --out FILE.parquet saves every call (Batch.load and Experiment.from_batch
  read it back).

exit status:
  0  every measured call was ok; 1  some call failed (an arm that mostly fails is
  reported as such); 2  usage error (bad arguments, unreadable inputs, a grid
  name that clashes with a batch column, a handler that cannot start)

examples:
  fnrun-nb experiment ./v1.py ./v2.py --env-grid THREADS=1,4 --inputs calls.txt
  fnrun-nb experiment ./h.py --env-grid CACHE=on,off --env-grid MODEL=s,m \\
      --inputs calls.jsonl --json-inputs --rounds 8 --seed 1 --json
"""


class _UsageError(Exception):
    """A problem with what the user asked for: message to stderr, exit status 2."""


def _grid_entry(text: str) -> tuple[str, list[str]]:
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,..., got {text!r}")
    return name, values.split(",")


def _number(kind: type, minimum: float, strict: bool) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum or (strict and value == minimum) or value != value:
            bound = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum:g}, got {text}")
        return value

    return parse


def add_parser(sub: Any) -> None:
    """Add the ``experiment`` subcommand to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "experiment",
        help="handler versions times an env grid, interleaved, with a verdict per arm",
        description=(
            "Run every HANDLER with every combination of the --env-grid values over the\n"
            "same inputs, in interleaved rounds, and print one verdict per arm."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("handlers", metavar="HANDLER", nargs="+", help="handler commands (variants)")
    p.add_argument(
        "--env-grid", action="append", default=[], type=_grid_entry, metavar="NAME=V1,V2",
        help="per-call env values to try (repeatable: every combination is an arm)",
    )
    p.add_argument("--inputs", required=True, metavar="FILE", help="file of inputs (- for stdin)")
    p.add_argument("--json-inputs", action="store_true", help="--inputs is JSON lines")
    p.add_argument("--rounds", type=_number(int, 1, False), default=5, metavar="N",
                   help="rounds over every arm (default: 5)")
    p.add_argument("-w", "--workers", type=_number(int, 1, False), default=2, metavar="N",
                   help="handler processes per variant (default: 2)")
    p.add_argument("-t", "--timeout", type=_number(float, 0, True), default=30.0,
                   metavar="SECONDS", help="deadline of each call (default: 30)")
    p.add_argument("--baseline", default=None, metavar="ARM",
                   help="the arm ratios are taken against (default: the first arm)")
    p.add_argument("--metric", default="service_ms", help="what to rank by (default: service_ms)")
    p.add_argument("--threshold", type=_number(float, 0, False), default=0.05, metavar="FRACTION",
                   help="smallest relative difference that matters (default: 0.05)")
    p.add_argument("--seed", type=int, default=None, help="seed of the round order and bootstrap")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   type=env_pair, help="per-call env for every call, under the grid")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.parquet",
                   help="save every measured call (the experiment's batch)")


def _read_inputs(args: argparse.Namespace) -> list[Any]:
    from .batch import parse_json_lines

    try:
        if args.inputs == "-":
            raw = sys.stdin.buffer.read()
        else:
            raw = Path(args.inputs).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read {args.inputs}: {exc.strerror or exc}") from exc
    try:
        return list(parse_json_lines(raw)) if args.json_inputs else raw.splitlines()
    except (ValueError, TypeError) as exc:
        raise _UsageError(f"{args.inputs}: {exc}") from exc


def _jsonable(frame: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = frame.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def _print(exp: Any, as_json: bool) -> None:
    if not as_json:
        print(repr(exp))
        return
    ranked = exp.table()["direction"] != "not ranked"
    doc = {
        "baseline": exp.baseline,
        "best": exp.best() if ranked.any() else None,
        "metric": exp.metric,
        "threshold": exp.threshold,
        "rounds": exp.rounds,
        "seed": exp.seed,
        "interrupted": exp.interrupted,
        "arms": _jsonable(exp.table()),
        "effects": _jsonable(exp.effects()),
    }
    print(json.dumps(doc, indent=2, default=str))


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``experiment`` subcommand; the exit status (see the epilog).

    ``KeyboardInterrupt`` propagates after the partial table was printed.
    """
    try:
        return _run(args)
    except _UsageError as exc:
        print(f"fnrun-nb: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .errors import HandlerStartError
    from .experiments import ExperimentInterrupted, experiment

    if args.out is not None and args.out.suffix.lower() != ".parquet":
        raise _UsageError(f"--out {args.out}: the file name must end in .parquet")
    grid: dict[str, list[str]] = {}
    for name, values in args.env_grid:
        if name in grid:
            raise _UsageError(f"--env-grid {name} given twice; list all its values in one")
        grid[name] = values
    if len(set(args.handlers)) != len(args.handlers):
        raise _UsageError("a HANDLER is given twice: each variant must differ")
    inputs = _read_inputs(args)
    try:
        exp = experiment(
            {h: h for h in args.handlers}, inputs, env_grid=grid, rounds=args.rounds,
            workers=args.workers, timeout=args.timeout, baseline=args.baseline,
            metric=args.metric, threshold=args.threshold, seed=args.seed,
            env=dict(args.env),
        )
    except ExperimentInterrupted as exc:
        if exc.experiment is not None:
            _print(exc.experiment, args.json)
        raise
    except (ValueError, TypeError, HandlerStartError) as exc:
        raise _UsageError(str(exc)) from exc
    _print(exp, args.json)
    if args.out is not None:
        exp.batch.save(args.out)
        # With --json, standard output stays one JSON document.
        where = sys.stderr if args.json else sys.stdout
        print(f"record: {args.out} ({len(exp.batch)} rows)", file=where)
    failed = exp.table()["failures"].sum()
    return EXIT_OK if failed == 0 else EXIT_FAILED
