"""Benchmark harness: icechunk_storage against its peers, in the same run.

Run ``python -m benchmarks --help`` (or ``nox -s bench``). Method and caveats are in
``docs/benchmarks.md``. Nothing here is imported by the library.
"""

from __future__ import annotations
