"""Errors as RFC 9457 problem details (``application/problem+json``), carrying the
backbone's error code and, where one thing was wrong, its path and value.

Every refusal of the adapter is a :class:`Problem`; the application maps the other errors
it expects at the boundary (a package refused by the format layer, a request FastAPI could
not read, the broker or the store failing) to one, so that a client always gets the same
shape, and never a stack trace.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from backbone.errors import Issue, truncate

MEDIA_TYPE = "application/problem+json"
ENVELOPED = "/vdxp/"  # paths answered in the national axis's envelope (:mod:`.vdxp`)


class ProblemDetails(BaseModel):
    """RFC 9457's members, and the backbone's ``code``, ``path`` and ``value``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    path: str | None = None
    value: str | None = None


class Problem(Exception):
    """A request the adapter refuses: ``status``, our ``code``, and a sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        path: str | None = None,
        value: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.path, self.value = path, truncate(value)
        self.headers = headers

    @classmethod
    def of_issue(cls, status: int, issue: Issue) -> Problem:
        return cls(status, issue.code, issue.message, path=issue.path, value=issue.value)

    def details(self) -> ProblemDetails:
        return ProblemDetails(
            type=f"urn:backbone:problem:{self.code}",
            title=TITLES.get(self.status, "Refused"),
            status=self.status,
            detail=self.detail,
            code=self.code,
            path=self.path,
            value=self.value,
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.details().model_dump(exclude_none=True),
            status_code=self.status,
            media_type=MEDIA_TYPE,
            headers=self.headers,
        )

    def envelope(self) -> JSONResponse:
        """The national axis's shape (``/vdxp``): ``status`` FAIL, our code, the sentence."""
        where = f" ({self.path})" if self.path else ""
        return JSONResponse(
            {"status": "FAIL", "ErrorCode": self.code, "ErrorDesc": f"{self.detail}{where}"},
            status_code=self.status,
            headers=self.headers,
        )


TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    500: "Internal error",
    503: "Unavailable",
}

# what the OpenAPI document says every operation may answer
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetails, "description": title, "content": {MEDIA_TYPE: {}}}
    for status, title in TITLES.items()
}
