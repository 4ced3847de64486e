"""``python -m fastconv``: see :mod:`fastconv.bench.cli`."""

import sys

from .bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
