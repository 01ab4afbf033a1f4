"""Shared fixtures. Keep this small: fixtures used by one test module live in that module."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
