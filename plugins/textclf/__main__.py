"""Entry point of ``python -m textclf``."""

from __future__ import annotations

import sys

from textclf.cli import main

if __name__ == "__main__":
    sys.exit(main())
