"""The tracker's test bodies (tests/bodies/lifecycle.py) on the in-memory broker."""

from ..bodies.lifecycle import *  # noqa: F403
