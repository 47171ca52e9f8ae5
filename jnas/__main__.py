"""Entry point for ``python -m jnas`` (same as the ``jnas`` console script)."""

import sys

from jnas.cli import main

if __name__ == "__main__":
    sys.exit(main())
