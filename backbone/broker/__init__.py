"""Everything about RabbitMQ: the topology of the AMQP contract, the management API client,
grants and their provisioning, definitions export, private local nodes, and where to find a
broker (:func:`find_broker`)."""

from .discovery import FoundBroker, find_broker

__all__ = ["FoundBroker", "find_broker"]
