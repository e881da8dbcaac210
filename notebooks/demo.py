"""`make demo`: start a warm pool on the example echo handler and show a few calls."""

from __future__ import annotations

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


if __name__ == "__main__":
    main()
