"""Shared fixtures. Waits in the runner are scaled down for the suite (RUNNER_TIME_SCALE)."""

from __future__ import annotations

import os

os.environ.setdefault("RUNNER_TIME_SCALE", "0.05")
