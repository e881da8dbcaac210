"""An echo handler that cannot start while its gate file is missing.

Usage: ``start_gate.py GATE_PATH``.  While ``GATE_PATH`` does not exist the process
writes ``gate closed`` to stderr and exits 4 at start, before reading anything (a
handler that dies on import); once it exists, it echoes every input.
"""

from __future__ import annotations

import os
import sys

if not os.path.exists(sys.argv[1]):
    sys.stderr.write("gate closed\n")
    sys.exit(4)

from fnrun_nb.handler import serve  # noqa: E402

if __name__ == "__main__":
    serve(lambda data, ctx: data)
