"""The HTTP adapter's contract: schemas/openapi.yaml is what the application serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from adapters.http.app import openapi_document

CHECKED_IN = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"


def test_the_checked_in_openapi_document_is_the_applications() -> None:
    """Regenerate it with `backbone adapter openapi > schemas/openapi.yaml` after a change
    to the API, and read the difference: it is the change integrators see."""
    assert yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8")) == openapi_document()


def test_every_operation_documents_its_problems() -> None:
    """As problem details on /v1, in the axis's envelope on /vdxp."""
    document = openapi_document()
    envelope = "#/components/schemas/Envelope"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert {"401", "403", "404", "422"} <= set(answers), (method, path)
            refused = answers["401"]["content"]
            if path.startswith("/vdxp/"):
                assert refused["application/json"]["schema"]["$ref"] == envelope, path
                assert "application/problem+json" not in refused, (method, path)
            else:
                assert "application/problem+json" in refused, (method, path)
