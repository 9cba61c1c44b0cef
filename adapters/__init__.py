"""Integrator workers for systems that cannot speak AMQP: ``http`` (a REST API, and the
national axis SDK's operations) and ``folder`` (files dropped in and written out); both
take a document described in JSON (:mod:`.described`)."""
