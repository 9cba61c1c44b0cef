"""Schemathesis against the live adapter: generated requests (signed, within bounds) to
every operation of schemas/openapi.yaml find no 5xx and no answer that breaks the schema."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from adapters.http import vdxp
from adapters.http.app import openapi_document
from adapters.http.signing import HmacAuth, sign
from backbone.client import AsyncGateway

from ..conftest import SENDER, Signer, make_document
from .conftest import Pipeline
from .http_adapter import GATEWAY, running_adapter

pytestmark = pytest.mark.pipeline
H14 = "000.00.00.H14"
BEYOND_THE_SCHEMA = {
    ("POST", "/v1/documents"),
    ("POST", "/v1/statuses"),
    ("POST", "/v1/webhooks"),
}
EXAMPLES = 12  # per operation: bounded, so that the suite stays quick


class Signed(requests.auth.AuthBase):
    """The adapter's request signature on a requests session (what Schemathesis calls with)."""

    def __init__(self, auth: HmacAuth) -> None:
        self.auth = auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        assert isinstance(body, bytes)
        headers = sign(
            self.auth.key_id,
            self.auth.secret,
            request.method or "GET",
            request.path_url,
            body,
            time.time(),
        )
        request.headers.update(headers)
        if request.path_url.startswith("/vdxp/"):  # and as the axis SDK signs its calls
            secret = self.auth.secret.decode()
            request.headers.update(vdxp.sign_headers(self.auth.key_id, secret, {}))
        return request


async def test_generated_requests_find_no_server_error_and_no_answer_off_the_schema(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    await pipeline.add_agency(SENDER)
    await pipeline.add_agency(H14, inbox=False)
    await pipeline.add_gateway(GATEWAY, [H14])
    async with running_adapter(pipeline, tmp_path / "adapter.log") as adapter:
        auth = await adapter.credential(H14)
        async with adapter.client(auth) as client:  # something in the mailbox to list
            async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as amqp:
                await amqp.send(
                    signers["G22"].sign(
                        make_document(recipients=[H14], document_id=f"st-{uuid.uuid4().hex[:6]}")
                    )
                )
            for _ in range(100):
                if (await client.get("/v1/inbox/count")).json()["count"]:
                    break
                await asyncio.sleep(0.2)
        session = requests.Session()
        session.auth = Signed(auth)
        schema = schemathesis.openapi.from_dict(openapi_document())
        checked = await asyncio.to_thread(_run_all, schema, adapter.base_url, session)
    assert checked >= 30  # every operation was called


def _run_all(schema: Any, base_url: str, session: requests.Session) -> int:
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        # a package (any string to the schema) or a webhook's URL is checked beyond what
        # the schema can say: a refusal of a schema-valid one is right there
        # so is what a /vdxp call takes: its fields are in its signed header
        beyond = (
            operation.method.upper(),
            operation.path,
        ) in BEYOND_THE_SCHEMA or operation.path.startswith("/vdxp/")
        _check(operation, base_url, session, [positive_data_acceptance] if beyond else [])
    return len(operations)


def _check(operation: Any, base_url: str, session: requests.Session, excluded: list[Any]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base_url, session=session)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response, excluded_checks=excluded)

    check()
