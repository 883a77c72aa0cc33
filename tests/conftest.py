"""Session-wide test configuration. Backend-specific server fixtures live in their own modules."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins: list[str] = ["tests._s3_server", "tests._gcs_server", "tests._azurite"]
