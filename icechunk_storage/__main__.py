"""``python -m icechunk_storage``: the ``icechunk-storage`` command (see ``_cli``), whose
``demo`` subcommand is ``_demo.py``."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
