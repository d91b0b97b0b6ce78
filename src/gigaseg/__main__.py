"""``python -m gigaseg``: the ``gigaseg`` command."""

import sys

from gigaseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
