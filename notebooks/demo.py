"""`make demo`: start a warm pool on the example echo handler and show a few calls,
then the same through the C echo handler (compiled with the system `cc` into a
temporary directory) to show that a handler need not be Python."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fnrun_nb import Pool

HERE = Path(__file__).resolve().parent


def main() -> None:
    handler = HERE / "handlers" / "echo.py"
    t0 = time.perf_counter()
    with Pool(str(handler), workers=2, timeout=5.0) as pool:
        print(f"started {pool!r} in {(time.perf_counter() - t0) * 1e3:.1f} ms\n")
        for text, env in [("hello", None), ("wörld", {"GREETING": "hi"}), ("fnrun", None)]:
            result = pool.invoke(text, env=env)
            info = result.info
            assert info is not None
            print(
                f"invoke({text!r}, env={env}) -> status {result.status}, "
                f"data {result.data!r}, env {result.env}, "
                f"worker {info.worker} pid {info.pid}, {info.service * 1e3:.2f} ms"
            )
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            pool.invoke(b"x" * 16)
        per_call = (time.perf_counter() - t0) / n
        print(f"\n{n} sequential 16-byte calls: {per_call * 1e6:.1f} us per call")
        print(f"\n{pool!r}")
    c_handler()


def c_handler() -> None:
    """Compile notebooks/handlers/echo.c into a temporary directory and call it."""
    cc = shutil.which("cc")
    if cc is None:
        print("\n(no C compiler `cc` on this machine: the C handler part is left out)")
        return
    with tempfile.TemporaryDirectory(prefix="fnrun-demo-") as tmp:
        binary = Path(tmp) / "echo_c"
        subprocess.run([cc, "-O2", "-o", str(binary), str(HERE / "handlers" / "echo.c")],
                       check=True, timeout=120)
        with Pool(str(binary), workers=2, timeout=5.0) as pool:
            result = pool.invoke("hello from C", env={"LANG": "c"})
            print(f"\nC handler: {result!r}")
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n):
                pool.invoke(b"x" * 16)
            per_call = (time.perf_counter() - t0) / n
            print(f"{n} sequential 16-byte calls to the C handler: {per_call * 1e6:.1f} us per call")


if __name__ == "__main__":
    main()
