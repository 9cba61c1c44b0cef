"""The validator's test bodies (tests/bodies/validation.py) on a real RabbitMQ."""

import pytest

from ..bodies.validation import *  # noqa: F403

pytestmark = pytest.mark.pipeline
