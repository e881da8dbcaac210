"""``python -m fnrun_nb``: the command line (see :mod:`fnrun_nb.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
