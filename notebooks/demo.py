"""`make demo`: a two-minute look at fnrun_nb from a terminal.

1. A warm pool on the example echo handler: a few calls with per-call env.
2. A batch on a handler that fails on some inputs: failures are rows, the pool heals.
3. The C echo handler (compiled with the system `cc` into a temporary directory): a
   handler need not be Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fnrun_nb import Pool

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"


def handler(name: str) -> str:
    """The handler's path as a user would type it from here."""
    return os.path.relpath(HANDLERS / name)


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def calls() -> None:
    section("a warm pool: handlers/echo.py, 2 workers")
    t0 = time.perf_counter()
    with Pool(handler("echo.py"), workers=2, timeout=5.0) as pool:
        print(f"started in {(time.perf_counter() - t0) * 1e3:.1f} ms: {pool!r}\n")
        for text, env in [("hello", None), ("wörld", {"GREETING": "hi"}), ("fnrun", None)]:
            result = pool.invoke(text, env=env)
            info = result.info
            assert info is not None
            print(
                f"invoke({text!r}, env={env}) -> {result.status} {result.text()!r} "
                f"env={result.env}  [worker {info.worker}, pid {info.pid}, "
                f"{'cold, ' if info.cold else ''}{info.service * 1e3:.2f} ms]"
            )
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            pool.invoke(b"x" * 16)
        per_call = (time.perf_counter() - t0) / n
        print(f"\n{n} sequential 16-byte calls: {per_call * 1e6:.1f} us per call (one CPU)")


def batch() -> None:
    section("a batch: handlers/flaky.py crashes on 7s, raises on 3s")
    with Pool(handler("flaky.py"), workers=3, timeout=5.0) as pool:
        result = pool.map([str(i) for i in range(60)], progress=False)
        print(result.summary())
        failed = result.failed[["input_index", "outcome", "exit_code", "worker", "generation"]]
        print("\nbatch.failed (one row per failed call; the batch went on):")
        print(failed.to_string(index=False))
        print(f"\n{pool!r}")


def c_handler() -> None:
    section("a handler in C: handlers/echo.c")
    cc = shutil.which("cc")
    if cc is None:
        print("(no C compiler `cc` on this machine: this part is left out)")
        return
    with tempfile.TemporaryDirectory(prefix="fnrun-demo-") as tmp:
        binary = Path(tmp) / "echo_c"
        subprocess.run([cc, "-O2", "-o", str(binary), str(HANDLERS / "echo.c")],
                       check=True, timeout=120)
        with Pool(str(binary), workers=2, timeout=5.0) as pool:
            print(pool.invoke("hello from C", env={"LANG": "c"}))
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n):
                pool.invoke(b"x" * 16)
            per_call = (time.perf_counter() - t0) / n
            print(f"\n{n} sequential 16-byte calls to the C handler: {per_call * 1e6:.1f} us per call")


def main() -> None:
    # One CPU for the demo and its handlers, as `make bench` measures: a pipe round trip
    # costs ~5 us on one CPU and several times that when the two ends sit on two.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    calls()
    batch()
    c_handler()
    print("\nNext: `make lab` opens the notebooks (notebooks/01-quickstart.ipynb first).")


if __name__ == "__main__":
    main()
