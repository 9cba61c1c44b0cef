"""Settings from the environment (``BACKBONE_*``), validated once at start-up."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    max_attachment_bytes: int = Field(24 * MiB, gt=0, description="largest decoded attachment")
    trust_bundle: Path | None = Field(
        None, description="PEM file of trust anchors for package signatures (no web roots)"
    )
    crl_files: list[Path] = Field(
        default_factory=list, description="CRL files, as a JSON list in the environment"
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
    holidays: list[date] = Field(
        default_factory=list, description="public holidays, a JSON list of dates, for Decision 28"
    )
    stuck_after_hours: float = Field(
        72.0, gt=0, description="a delivery not final after this long is reported as stuck"
    )
    pki_dir: Path = Field(Path("pki"), description="the development PKI's directory")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] | None = Field(
        None, description="json for services, console for the CLI when unset"
    )

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


@cache
def get_settings() -> Settings:
    return Settings()
