"""The SDK's test bodies (tests/bodies/sdk.py) on a real RabbitMQ."""

import pytest

from ..bodies.sdk import *  # noqa: F403

pytestmark = pytest.mark.pipeline
