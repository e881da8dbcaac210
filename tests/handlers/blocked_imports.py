"""Run a handler file with pandas, IPython, ipywidgets and numpy made unimportable,
as in a handler's own environment where only protobuf is installed.

Usage: ``python blocked_imports.py HANDLER.py [ARGS...]``
"""

from __future__ import annotations

import runpy
import sys

BLOCKED = ("pandas", "IPython", "ipywidgets", "numpy")


class Blocker:
    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in this handler environment")
        return None


sys.meta_path.insert(0, Blocker)
handler = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(handler, run_name="__main__")
