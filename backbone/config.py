"""Settings from the environment (``BACKBONE_*``), validated once at start-up."""

from __future__ import annotations

import json
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .edxml.limits import Limits, MiB


class Settings(BaseSettings):
    """Every knob of the backbone; each is also an environment variable, e.g.
    ``BACKBONE_MAX_PACKAGE_BYTES=67108864``."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_", extra="ignore")

    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/", description="the broker (AMQP 0-9-1)"
    )
    mgmt_url: str = Field(
        "http://guest:guest@127.0.0.1:15672/",
        description="the RabbitMQ management API, as an administrator (provisioning)",
    )
    operators_user: str = Field(
        "operators", description="the dashboard's broker user, created by `backbone init`"
    )
    delivery_limit: int = Field(5, ge=1, description="deliveries before quarantine")
    backbone_agency: str = Field(
        "000.00.00.B00", description="the backbone's own identifier, sender of rejections"
    )
    backbone_key: Path | None = Field(None, description="key the backbone signs rejections with")
    backbone_cert: Path | None = Field(None, description="its certificate and chain (PEM)")
    cert_binding: Literal["registry", "subject", "either"] = Field(
        "either", description="how a certificate is bound to its agency"
    )
    status_signature: Literal["required", "optional"] = Field(
        "optional", description="whether status packages must be signed"
    )
    max_package_bytes: int = Field(32 * MiB, gt=0, description="largest package accepted")
    max_status_bytes: int = Field(256 * 1024, gt=0, description="largest status accepted")
    max_recipients: int = Field(100, ge=1, description="most recipients one package may name")
    principal_max_connections: int = Field(
        20, ge=1, description="connections one agency's or gateway's broker user may open"
    )
    principal_max_channels: int = Field(
        200, ge=1, description="channels (over its connections) one principal's user may open"
    )
    max_attachment_bytes: int = Field(24 * MiB, gt=0, description="largest decoded attachment")
    trust_bundle: Path | None = Field(
        None, description="PEM file of trust anchors for package signatures (no web roots)"
    )
    crl_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="CRL files: one path, a comma-separated list, or a JSON list",
    )
    crl_refresh_seconds: float = Field(
        5.0, ge=0, description="how often a validator looks whether a CRL file changed"
    )
    allow_sha1: bool = Field(False, description="accept legacy RSA-SHA1 / SHA-1 signatures")
    cert_agency_attribute: str = Field(
        "UID", description="subject attribute that carries the agency identifier"
    )
    database_url: str = Field(
        "sqlite:///backbone.db", description="sqlite:///FILE (default) or postgresql://..."
    )
    registry_ttl: float = Field(
        5.0, ge=0, description="seconds a worker trusts a cached registry answer"
    )
    timezone: str = Field("Asia/Ho_Chi_Minh", description="where reports count days and noons")
    holidays: Annotated[list[date], NoDecode] = Field(
        default_factory=list,
        description="public holidays for Decision 28: YYYY-MM-DD, comma-separated or a JSON list",
    )
    stuck_after_hours: float = Field(
        72.0, gt=0, description="a delivery not final after this long is reported as stuck"
    )
    pki_dir: Path = Field(Path("pki"), description="the development PKI's directory")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR (any case)"
    )
    log_format: Literal["json", "console"] | None = Field(
        None, description="json for services, console for the CLI when unset"
    )

    @field_validator("crl_files", "holidays", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A JSON list, or plain text: one item or several separated by commas."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list ({exc.msg})") from None
        return [item.strip() for item in text.split(",") if item.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (e.g. Asia/Ho_Chi_Minh)") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (sqlite:///FILE or postgresql://...)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"{url.get_backend_name()!r} is not sqlite or postgresql")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp(cls, value: str) -> str:
        return _url(value, ("amqp", "amqps"))

    @field_validator("mgmt_url")
    @classmethod
    def _mgmt(cls, value: str) -> str:
        return _url(value, ("http", "https"))

    @property
    def limits(self) -> Limits:
        return Limits(self.max_package_bytes, self.max_attachment_bytes)

    @property
    def vhost(self) -> str:
        """The backbone's virtual host: the path of the AMQP URL (``/`` when empty)."""
        return unquote(urlsplit(self.amqp_url).path[1:]) or "/"

    @property
    def workers_user(self) -> str:
        """The backbone's own principal: the user the workers connect as."""
        return unquote(urlsplit(self.amqp_url).username or "guest")

    @property
    def admin_amqp_url(self) -> str:
        """The broker as the administrator of the management URL: what declares the
        topology and the inboxes (the workers' user may not)."""
        amqp, mgmt = urlsplit(self.amqp_url), urlsplit(self.mgmt_url)
        credentials = f"{mgmt.username or 'guest'}:{mgmt.password or 'guest'}"
        host = f"{amqp.hostname}:{amqp.port}" if amqp.port else str(amqp.hostname)
        return urlunsplit((amqp.scheme, f"{credentials}@{host}", amqp.path, amqp.query, ""))


def _url(value: str, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"not an {' or '.join(s + '://' for s in schemes)} URL with a host")
    return value


def describe(error: ValidationError) -> str:
    """One line naming each malformed BACKBONE_ variable and what is wrong with it
    (never its value: it may hold a password)."""
    faults = []
    for item in error.errors(include_url=False, include_input=False):
        name = "_".join(str(part) for part in item["loc"][:1]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        faults.append(f"BACKBONE_{name}: {message}" if name else message)
    return "malformed setting " + "; ".join(faults)


@cache
def get_settings() -> Settings:
    return Settings()
