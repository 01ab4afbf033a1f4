"""``python -m graphserve``: the same as the ``graphserve`` command."""

from __future__ import annotations

import sys

from graphserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
