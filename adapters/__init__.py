"""Integrator workers for systems that cannot speak AMQP: ``http`` (a REST API, being built)
and a folder drop (to come)."""
