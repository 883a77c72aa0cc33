"""``python -m icechunk_storage demo``: see ``_demo.py``."""

from __future__ import annotations

import sys

from ._demo import main

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["demo"]:
        arguments = arguments[1:]
    sys.exit(main(arguments))
