"""Integrator workers for systems that cannot speak AMQP: ``http`` (a REST API); a folder
drop is to come."""
