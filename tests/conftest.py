"""Session-wide test configuration. Backend-specific server fixtures live in their own modules."""

from __future__ import annotations

pytest_plugins: list[str] = []
