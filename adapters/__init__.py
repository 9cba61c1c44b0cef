"""Integrator workers for systems that cannot speak AMQP (folder drop, HTTP API).

Empty until the pipeline exists: see the routing-pipeline issue.
"""
