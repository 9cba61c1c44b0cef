"""The SDK's test bodies (tests/bodies/sdk.py) on the in-memory broker."""

from ..bodies.sdk import *  # noqa: F403
