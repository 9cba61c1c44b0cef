"""The HTTP adapter: document-management systems join the backbone over HTTP.

    backbone adapter http --gateway NAME      # serve /v1, /vdxp, /health, /metrics

- :mod:`.app`: the FastAPI application and :func:`~.app.serve` (the adapter around uvicorn);
- :mod:`.mailbox`: what the broker delivered, committed before it is acked, taken by peek,
  download and acknowledge;
- :mod:`.credentials`: who may call it, for which agencies, secrets sealed with
  ``BACKBONE_ADAPTER_KEY``;
- :mod:`.signing`: request signatures (pure), and ``HmacAuth`` for httpx clients;
- :mod:`.composing`: the packages it builds and signs with the agency keys it holds;
- :mod:`.vdxp`: the national axis SDK's operations on the same mailbox;
- :mod:`.problems`: errors as RFC 9457 problem details.
"""
