"""The validator's test bodies (tests/bodies/validation.py) on the in-memory broker."""

from ..bodies.validation import *  # noqa: F403
