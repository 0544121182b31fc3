"""Shared test set-up: the leak check, the namespace LAN, hypothesis profiles."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.leaks", "tests.lan"]

# Nodes built from the environment do not run zeroconf unless a test asks for it: tests
# that use discovery set ``discovery=True`` and an interface of their own namespace LAN
# (or loopback), so test meshes never find each other or anything outside.
os.environ["MESH_DISCOVERY"] = "off"

# This machine is noisy (2 shared cores): no per-example deadlines.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
