"""Test bodies for the workers, written once against tests/worlds.py's ``World`` and run
twice: in memory (tests/unit) and on RabbitMQ (tests/pipeline), each module importing
them with ``from ..bodies.<name> import *`` beside its own ``world`` fixture."""
