"""The command line: ``fnrun-nb run HANDLER [INPUT]`` (also ``python -m fnrun_nb``);
``fnrun-nb experiment`` (:mod:`fnrun_nb.cli_experiment`), ``fnrun-nb fuzz``
(:mod:`fnrun_nb.cli_forensics`) and ``fnrun-nb check`` (:mod:`fnrun_nb.conformance.cli`)
keep their options and output in modules of their own.

Thin by design: parse arguments, read the inputs, run one batch through a
:class:`~fnrun_nb.front.Pool`, print its summary, optionally write the record.  The
JSON-lines rule is :func:`fnrun_nb.batch.input_from_json`, shared with the magics.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .cli_types import env_pair, non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from .front import Runner

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
inputs:
  One input per line of INPUT (a file, or standard input when INPUT is - or
  missing); the line's bytes are sent without the newline.  With --json each
  non-blank line is a JSON object:
    {"data": "text"}                 a string is sent as UTF-8
    {"data": {"a": 1}}               any other JSON value as its JSON encoding
    {"data_b64": "AAEC/w=="}         raw bytes, base64
    {"data": "x", "env": {"K": "v"}} a per-call env (string values); -e values
                                     are merged under it

output:
  The batch summary (counts by outcome and status, latency percentiles of ok
  calls, throughput) on standard output.  --out FILE.parquet writes the full
  record (one row per call) with its run metadata; --out FILE.csv writes it as
  CSV (env columns as JSON, data as UTF-8 text).

exit status:
  0  every call was ok (the handler returned a Result, whatever its status)
  1  some call failed (crashed, timed out, broke the protocol, ...), including
     start_failed calls of a handler that starts but dies before answering
  2  usage error: bad arguments, unreadable or malformed input, a handler
     command that does not exist or cannot be executed

examples:
  seq 1000 | fnrun-nb run ./handler.py -w 4
  fnrun-nb run ./handler.py calls.jsonl --json --repeat 3 --out run.parquet
  fnrun-nb run "node handler.js" inputs.txt --rate 200 -t 2 -e MODE=fast
  fnrun-nb run ./handler.py calls.txt --resources --handler-timing --max-rss 512
  fnrun-nb run /srv/handler.py calls.txt --dask tcp://scheduler:8786 -w 8
"""


class _UsageError(Exception):
    """A problem with what the user asked for: message to stderr, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    from .settings import DEFAULTS

    parser = argparse.ArgumentParser(
        prog="fnrun-nb",
        description="Run, explore and profile fnrun handlers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="run a handler over many inputs and summarise the calls",
        description=(
            "Run HANDLER over every input through a warm pool of handler processes, "
            "record one row per call and print the summary."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "handler", metavar="HANDLER",
        help="the handler command: a program, or a quoted command line ('node h.js'); "
        "a .py file that is not executable runs under this Python",
    )
    run.add_argument(
        "input", metavar="INPUT", nargs="?", default="-",
        help="file of inputs, one per line (default: standard input)",
    )
    run.add_argument("--json", action="store_true", help="INPUT is JSON lines (see below)")
    run.add_argument(
        "-w", "--workers", type=positive_int, default=DEFAULTS.workers, metavar="N",
        help=f"handler processes (default: {DEFAULTS.workers})",
    )
    run.add_argument(
        "-t", "--timeout", type=positive_float, default=DEFAULTS.timeout, metavar="SECONDS",
        help=f"deadline of each call (default: {DEFAULTS.timeout:g})",
    )
    run.add_argument(
        "--max-wait", type=non_negative_float, default=DEFAULTS.max_wait, metavar="SECONDS",
        help="longest wait for a free worker before a call is 'unavailable' "
        f"(default: {DEFAULTS.max_wait:g})",
    )
    run.add_argument(
        "--repeat", type=positive_int, default=1, metavar="N",
        help="run every input N times: all once, then all again (default: 1)",
    )
    run.add_argument(
        "--rate", type=positive_float, default=None, metavar="PER_SECOND",
        help="open-loop arrivals: calls start on a fixed schedule and latency counts "
        "from the scheduled time (default: as fast as the workers go)",
    )
    run.add_argument(
        "-c", "--concurrency", type=positive_int, default=None, metavar="N",
        help="calls in flight at once (default: the number of workers)",
    )
    run.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", type=env_pair,
        help="per-call env for every call (repeatable)",
    )
    run.add_argument(
        "--resources", action="store_true",
        help="record what each call cost its handler process (cpu_ms, rss_mib, "
        "peak_rss_mib columns; the summary shows their medians and peaks)",
    )
    run.add_argument(
        "--handler-timing", action="store_true",
        help="ask the handler for its own time per call (handler_ms and transport_ms "
        "columns; SDK handlers answer, others give NaN)",
    )
    run.add_argument(
        "--max-rss", type=positive_float, default=None, metavar="MIB",
        help="recycle a handler process whose resident memory exceeds MIB after a call "
        "(default: never)",
    )
    run.add_argument(
        "--protocol", choices=("fnrun", "lines", "script"), default=DEFAULTS.protocol,
        help="how HANDLER is driven: fnrun (framed calls, the default), lines (one line"
        " in, one line out of warm processes; no -e, no --handler-timing) or script (a"
        " new process per call: stdin in, stdout out, exit code as status)",
    )
    run.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="write the record to FILE: .parquet or .csv",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar on standard error"
    )
    run.add_argument(
        "--dask", default=None, metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786): one"
        " pool of -w workers on each Dask worker, the same record plus host and"
        " dask_worker columns (needs the dask extra: pip install 'fnrun-nb[dask]')",
    )
    from .cli_experiment import add_parser as add_experiment

    add_experiment(sub)

    from .conformance.cli import add_check_command

    add_check_command(sub)

    from .cli_forensics import add_fuzz_parser

    add_fuzz_parser(sub)
    return parser


def read_inputs(source: BinaryIO, *, as_json: bool) -> list[Any]:
    """Inputs from a byte stream: one per line, or ``(data, env)`` pairs from JSON lines.

    Raises ``ValueError`` / ``TypeError`` naming the line for malformed JSON lines.
    """
    raw = source.read()
    if as_json:
        from .batch import parse_json_lines

        return list(parse_json_lines(raw))
    return list(raw.splitlines())


def _write_record(batch: Any, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        from .batch.storage import save_batch

        save_batch(batch, out)
    elif suffix == ".csv":
        df = batch.df.copy()
        for name in ("env", "env_in"):
            df[name] = [json.dumps(v, ensure_ascii=False) for v in df[name]]
        df["data"] = [None if v is None else v.decode("utf-8", "replace") for v in df["data"]]
        df.to_csv(out, index=False)
    else:  # checked before the run
        raise _UsageError(f"--out {out}: unknown format")


def _run(args: argparse.Namespace) -> int:
    from .errors import HandlerStartError
    from .front import Pool
    from .kinds import check_calls
    from .settings import PoolSettings

    if args.out is not None and args.out.suffix.lower() not in (".parquet", ".csv"):
        raise _UsageError(f"--out {args.out}: the file name must end in .parquet or .csv")
    try:
        if args.input == "-":
            inputs = read_inputs(sys.stdin.buffer, as_json=args.json)
        else:
            with open(args.input, "rb") as f:
                inputs = read_inputs(f, as_json=args.json)
    except OSError as exc:
        raise _UsageError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise _UsageError(f"{args.input if args.input != '-' else 'stdin'}: {exc}") from exc
    settings = PoolSettings(
        workers=args.workers,
        timeout=args.timeout,
        max_wait=args.max_wait,
        max_rss_mib=args.max_rss,
        resources=args.resources,
        handler_timing=args.handler_timing,
        protocol=args.protocol,
    )
    try:  # what the handler's kind cannot carry, before any process starts
        check_calls(
            args.protocol, [i if isinstance(i, bytes) else i[0] for i in inputs],
            env=bool(args.env) or any(not isinstance(i, bytes) and i[1] for i in inputs),
            handler_timing=args.handler_timing,
        )
    except ValueError as exc:
        raise _UsageError(str(exc).replace("handler_timing=True", "--handler-timing")) from None
    pool: Runner
    try:
        if args.dask is not None:
            from .dask import DaskPool

            pool = DaskPool(args.dask, args.handler, **settings.as_dict())
        else:
            pool = Pool(args.handler, **settings.as_dict())
    except (HandlerStartError, ValueError) as exc:
        raise _UsageError(str(exc)) from exc
    except ImportError as exc:  # distributed is not installed
        raise _UsageError(f"--dask needs the dask extra (pip install 'fnrun-nb[dask]'): {exc}") from exc
    except OSError as exc:  # no scheduler at that address
        raise _UsageError(f"--dask {args.dask}: cannot reach the scheduler: {exc}") from exc
    with pool:
        batch = pool.map(
            inputs,
            env=dict(args.env),
            repeat=args.repeat,
            rate=args.rate,
            concurrency=args.concurrency,
            keep_data=args.out is not None,
            progress=False if args.no_progress else "auto",
        )
    print(batch.summary())
    if args.out is not None:
        _write_record(batch, args.out)
        print(f"record: {args.out} ({len(batch)} rows)")
    return EXIT_OK if batch.summary().failed == 0 else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit status.

    0 when every call was ok, 1 when some failed, 2 for usage errors (argparse's
    own errors, unreadable or malformed input, a handler that cannot start).
    ``KeyboardInterrupt`` propagates after the batch's calls were cancelled.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return, don't exit
        return int(exc.code or 0)
    if args.command == "experiment":
        from .cli_experiment import run as run_experiment

        return run_experiment(args)
    if args.command == "check":
        from .conformance.cli import run_check

        return run_check(args)
    if args.command == "fuzz":
        from .cli_forensics import run_fuzz

        return run_fuzz(args)
    try:
        return _run(args)
    except _UsageError as exc:
        print(f"fnrun-nb: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
