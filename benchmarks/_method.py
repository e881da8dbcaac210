"""The measuring method every benchmark section shares.

::

    cases {name: fn(n) -> seconds}  ──interleave(rounds)──▶  samples {name: [s, s, ...]}
                                                             │
              summarize(samples[name])  ◀────────────────────┤  median, q1, q3 of one case
              paired(samples[a], samples[b])  ◀──────────────┘  a/b taken within each round

These machines have two noisy cores shared with other work, so an absolute time from
one run means little and a ratio means more.  Three rules follow:

- *Interleave.*  Every round runs every case once, in an order that rotates from round
  to round, so a burst of noise hits all cases alike instead of one case's block.
- *Pair.*  A ratio is computed inside each round (``a[i] / b[i]``) and then
  summarized, so a slow round slows both sides of its ratio.
- *Report spread.*  A median comes with its interquartile range (q1..q3), never alone.

Pinning (``os.sched_setaffinity``) is applied to every thread of this process and of
every descendant process, because a child inherits the mask of the *thread* that
spawned it (a pool's supervisor thread, a Dask nanny), not of the main thread.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "Case",
    "Stats",
    "calibrate",
    "interleave",
    "machine_facts",
    "paired",
    "pin_cpu",
    "pinned",
    "set_affinity_tree",
    "summarize",
    "timed",
]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stats:
    """Median and interquartile range of ``n`` samples."""

    median: float
    q1: float
    q3: float
    n: int

    def scaled(self, factor: float) -> Stats:
        """The same statistics in another unit (``factor`` > 0 keeps the order)."""
        return Stats(self.median * factor, self.q1 * factor, self.q3 * factor, self.n)

    def inverted(self, numerator: float = 1.0) -> Stats:
        """``numerator / x`` of every sample's statistics (a time into a rate)."""
        return Stats(numerator / self.median, numerator / self.q3, numerator / self.q1, self.n)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples: Iterable[float]) -> Stats:
    """Median and quartiles (``statistics.quantiles``, inclusive method).

    Raises ``ValueError`` for no samples.
    """
    values = sorted(samples)
    if not values:
        raise ValueError("no samples to summarize")
    if len(values) == 1:
        v = values[0]
        return Stats(v, v, v, 1)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Stats(statistics.median(values), q1, q3, len(values))


def paired(a: list[float], b: list[float]) -> Stats:
    """Statistics of the per-round ratios ``a[i] / b[i]`` (rounds are paired)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    return summarize(x / y for x, y in zip(a, b))


Case = Callable[[int], float]
"""A case runs ``n`` operations and returns the seconds per operation."""


def timed(op: Callable[[], object]) -> Case:
    """A case that times ``n`` calls of ``op`` with ``perf_counter``."""

    def run(n: int) -> float:
        clock = time.perf_counter
        t0 = clock()
        for _ in range(n):
            op()
        return (clock() - t0) / n

    return run


def calibrate(case: Case, round_seconds: float, *, least: int = 1, most: int = 100_000) -> int:
    """How many operations of ``case`` fill about ``round_seconds``.

    Runs the case a few times (which also warms it up: imports, caches, first calls).
    """
    n = 1
    per_op = case(n)
    while per_op * n < round_seconds / 10 and n < most:
        n = min(most, n * 10)
        per_op = case(n)
    return max(least, min(most, int(round_seconds / max(per_op, 1e-9))))


def interleave(
    cases: Mapping[str, Case], counts: Mapping[str, int], rounds: int
) -> dict[str, list[float]]:
    """Run ``rounds`` rounds; each runs every case once with ``counts[name]`` operations.

    The order rotates every round.  Returns the seconds per operation of each round, by
    case, in round order (so that ``paired`` can divide round by round).
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(cases[name](counts[name]))
    return samples


# --- CPU pinning ------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children of each task, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def set_affinity_tree(cpus: set[int], *, pid: int | None = None) -> int:
    """Set the CPU mask of every thread of ``pid`` (default: this process) and of every
    process below it.  Returns how many threads were set (ones that ended meanwhile
    are skipped)."""
    root = os.getpid() if pid is None else pid
    done = 0
    for p in [root, *_descendants(root)]:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
                done += 1
            except OSError:
                pass  # the thread or process ended between listing and setting
    return done


def pin_cpu() -> int:
    """The CPU to pin to: the last one this process may use (CPU 0 takes more of the
    machine's interrupts)."""
    return max(os.sched_getaffinity(0))


@contextmanager
def pinned(cpu: int | None) -> Iterator[set[int]]:
    """Pin this process, its threads and all its descendants to ``cpu`` (``None``: leave
    the mask as it is) for the block, then restore the mask they had before.

    Processes started inside the block inherit the pin; pin again after starting
    processes from other threads (``set_affinity_tree``) to be sure.
    """
    before = os.sched_getaffinity(0)
    if cpu is None:
        yield before
        return
    set_affinity_tree({cpu})
    try:
        yield {cpu}
    finally:
        set_affinity_tree(before)


# --- machine facts ----------------------------------------------------------------------

_PACKAGES = (
    "fnrun-nb", "protobuf", "pandas", "numpy", "psutil", "ipywidgets", "ipykernel",
    "distributed", "dask", "ipyparallel",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, object]:
    """What the numbers were measured on: CPU, cores, load, OS, Python, packages, commit."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": sorted(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
