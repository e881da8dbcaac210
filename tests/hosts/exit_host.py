"""A host that leaves a pool open and exits, optionally with a child forked by
multiprocessing holding the pool's pipes (so the handlers see no stdin EOF).

Usage: ``python exit_host.py HANDLER [plain|fork]``; prints ``{"pids", "child"}``.
"""

from __future__ import annotations

import json
import sys
import time

# Imported first so that its exit hook (joining children) runs after fnrun_nb's.
import multiprocessing
import multiprocessing.util  # noqa: F401

from fnrun_nb import Pool


def main() -> None:
    pool = Pool(sys.argv[1], workers=2, timeout=10)
    for _ in range(4):
        pool.invoke(b"warm")
    child = None
    if sys.argv[2] == "fork":
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(1.0,))
        child.start()
    pids = [w.pid for w in pool.snapshot().workers]
    print(json.dumps({"pids": pids, "child": child.pid if child else None}), flush=True)
    # No close(): interpreter exit must end the handlers.


if __name__ == "__main__":
    main()
