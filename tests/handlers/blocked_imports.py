"""Run a handler file where only the standard library, protobuf (``google``) and
fnrun_nb can be imported, as in a handler's own environment with only protobuf
installed: every other top-level package in this interpreter's site-packages (pandas,
IPython, psutil, tqdm, ...) fails to import.

Usage: ``python blocked_imports.py HANDLER.py [ARGS...]``
"""

from __future__ import annotations

import runpy
import sys

ALLOWED = frozenset(sys.stdlib_module_names) | {"fnrun_nb", "google"}


class Blocker:
    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] not in ALLOWED:
            raise ImportError(f"{name} is not installed in this handler environment")
        return None


sys.meta_path.insert(0, Blocker)
handler = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(handler, run_name="__main__")
