"""One settings object for every role: ``SECURECONNECT_*`` variables and an optional TOML file.

The TOML file is named by ``SECURECONNECT_CONFIG``; environment variables win over it so that a
Kubernetes manifest can override a baked-in file without editing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from secureconnect import __version__

Role = Literal["all", "api-gateway", "chat-service", "video-service"]


# A list setting, given in the environment as JSON (["a", "b"]) or as a,b: parsed by
# Settings._names rather than by the settings loader, whose own JSON error names no format.
NameList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECURECONNECT_", extra="forbid")

    role: Role = "all"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str | None = Field(
        None, description="URL users open; derived from host:port if unset"
    )
    release: str | None = Field(
        None, description="what is deployed (the image tag); the package version if unset"
    )
    data_dir: Path = Path("data")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy async URL; the SQLite file under data_dir if unset"
    )
    auto_migrate: bool = Field(True, description="apply migrations at start (embedded default)")
    redis_url: SecretStr | None = None

    db_pool_size: int = Field(10, ge=1, description="connections kept open (max idle)")
    db_max_overflow: int = Field(
        10, ge=0, description="extra connections beyond the pool under load"
    )
    db_pool_timeout_s: float = Field(10.0, gt=0, description="wait for a free connection")

    token_ttl_s: int = Field(30 * 24 * 3600, ge=1, description="lifetime of a login token")
    max_message_bytes: int = Field(64 * 1024, ge=1, description="largest accepted ciphertext")
    edit_window_s: int = Field(
        86400,
        ge=0,
        description="how long a sender may edit a message or delete it for everyone "
        "(clients enforce it: the server cannot read which messages are edits)",
    )
    max_request_bytes: int = Field(256 * 1024, ge=1024, description="largest accepted HTTP body")
    history_page_max: int = Field(500, ge=1)
    ws_auth_timeout_s: float = Field(10.0, gt=0, description="time to send the auth frame")
    ws_send_queue: int = Field(
        1000, ge=1, description="events buffered per WebSocket before it is closed as too slow"
    )
    ws_send_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes waiting to reach one WebSocket (queued in the server, its socket "
        "buffer and the kernel's send queue) before it is closed as too slow (4429)",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0)
    ws_ping_timeout_s: float = Field(20.0, gt=0)
    shutdown_grace_s: float = Field(25.0, ge=0)

    admins: NameList = Field(
        default_factory=list,
        description='usernames of on-call admins: ["alice", "bob"] or alice,bob',
    )
    alert_webhook_token: SecretStr | None = Field(
        None, description="Alertmanager sends it as a bearer token to /v1/ops/alertmanager"
    )
    incident_verify_s: float | None = Field(
        None, ge=0, description="override the runbook's 10-minute verification window"
    )
    incident_update_every_s: float | None = Field(None, gt=0, description="override 15 min")
    incident_stakeholders_after_s: float | None = Field(None, gt=0, description="override 30 min")
    prometheus_url: str | None = Field(
        None,
        description="Prometheus that scrapes every replica: closing an incident then checks "
        "the whole platform stayed healthy, not only the replica answering",
    )
    reminder_check_s: float = Field(30.0, gt=0, description="how often reminders are checked")
    notify_slack_webhook_url: SecretStr | None = Field(
        None, description="Slack-compatible incoming webhook for reminders and notices"
    )
    notify_smtp_host: str | None = None
    notify_smtp_port: int = 25
    notify_email_from: str = "secureconnect@localhost"
    notify_stakeholder_emails: NameList = Field(default_factory=list)

    trusted_proxies: NameList = Field(
        default_factory=list,
        description='proxies whose X-Forwarded-For is believed, e.g. ["10.0.0.0/8"]',
    )
    guard_refresh_s: float = Field(
        2.0, gt=0, description="how often a replica re-reads the deny list and rate-limit mode"
    )
    emergency_requests_per_min: int = Field(
        1, ge=1, description="per client IP on /v1/ while the emergency rate limit is on"
    )
    auto_block_failures_per_min: int = Field(
        0,
        ge=0,
        description="failed logins from one address within a clock minute that put it on the "
        "deny list by itself (0: never; the login throttle still applies)",
    )
    auto_block_s: int = Field(
        3600, ge=1, description="how long an automatic block lasts before it lifts by itself"
    )

    secret_key: SecretStr | None = Field(
        None,
        description="base64 of 32 bytes that seal TOTP secrets at rest; the same on every "
        "replica (without it, a key is made on first start in the data dir)",
    )
    require_totp_for_admins: bool = Field(
        False, description="on-call admins may use the ops API only with two-step verification on"
    )

    # Normal-mode rate limits (guard.limits): token buckets holding a minute's worth.
    rate_limits: bool = Field(True, description="limit requests per user and per address")
    rate_limit_per_user_min: int = Field(
        200, ge=1, description="authenticated requests a minute per user, all replicas together"
    )
    rate_limit_per_address_min: int = Field(
        100, ge=1, description="unauthenticated API requests a minute per client address"
    )

    registrations_per_address_hour: int = Field(
        10, ge=1, description="accounts created an hour per client address"
    )

    # Login throttling (guard.throttle): a few free failures, then waits that double.
    login_throttle: bool = Field(
        True, description="throttle logins per account and address (off: only for measuring)"
    )
    login_free_failures: int = Field(
        5, ge=1, description="failed logins of one account before its first wait"
    )
    login_free_failures_per_address: int = Field(
        30, ge=1, description="failed logins from one address before its first wait"
    )
    login_max_wait_s: int = Field(
        900, ge=1, le=3600, description="the longest wait a run of failures leads to"
    )
    login_failures_per_hour: int = Field(
        100, ge=1, description="failed logins of one account in a clock hour, at most"
    )

    # argon2id's cost. The defaults are the library's (RFC 9106's second recommendation); the
    # lower bounds are OWASP's smallest recommended configuration (12 MiB, 3 passes).
    argon2_memory_kib: int = Field(65536, ge=12288, description="argon2id memory per hash")
    argon2_time_cost: int = Field(3, ge=3, description="argon2id passes")
    argon2_parallelism: int = Field(4, ge=1, description="argon2id lanes")

    sentry_dsn: SecretStr | None = Field(
        None, description="report unexpected errors to this Sentry DSN (no bodies or secrets)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this of its first byte"
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="a request's body must arrive within this of its headers"
    )
    backup_dir: Path | None = Field(
        None, description="where `secureconnect backup` writes (data_dir/backups if unset)"
    )
    backup_keep: int = Field(7, ge=1, description="complete backups kept; older ones are removed")
    blob_store: str = Field(
        "local",
        description='where attachment ciphertext is kept: "local" (blob_dir) or '
        '"s3://bucket/prefix" (S3-compatible object storage; see s3_endpoint_url)',
    )
    blob_dir: Path | None = Field(
        None, description="the local blob store's folder (data_dir/blobs if unset)"
    )
    s3_endpoint_url: str | None = Field(
        None, description="an S3-compatible server's URL (AWS itself if unset)"
    )
    s3_region: str = Field("us-east-1", description="the S3 region")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 credentials (else the AWS_* variables or the pod's role)"
    )
    s3_secret_access_key: SecretStr | None = None
    max_attachment_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="the largest attachment (its ciphertext)"
    )
    attachment_quota_bytes: int = Field(
        2 * 1024 * 1024 * 1024,
        ge=1024,
        description="attachment bytes one user may keep stored at once (every conversation)",
    )
    blob_upload_ttl_s: int = Field(
        24 * 3600, ge=1, description="an upload not completed within this is removed"
    )
    blob_gc_interval_s: float = Field(
        600.0, gt=0, description="how often blobs nobody may fetch any more are removed"
    )
    suggest_dir: Path | None = Field(
        None,
        description="folder holding the suggestion pack (pack.json and pack.sha256) that web "
        "clients get; the one shipped in the package if unset",
    )

    sfu: bool = Field(
        True, description="run Janus (the SFU) in the roles that serve calls, when it is installed"
    )
    janus_binary: str = Field("janus", description="the Janus executable (PATH is searched)")
    janus_lib_dir: Path | None = Field(
        None, description="Janus's folder holding plugins/ and transports/; found if unset"
    )
    janus_rtp_ports: str = Field("20000-20999", description="UDP ports Janus uses for media")
    janus_record_dir: Path | None = Field(
        None,
        description="Janus records every call's media here (.mjr files): what the SFU's "
        "operator can capture, which end-to-end encryption leaves as ciphertext; for audits",
    )
    media_probe_port: int = Field(
        5004, ge=0, le=65535, description="UDP port answering STUN for the runbook's check; 0: off"
    )
    media_address: str | None = Field(
        None,
        description="the one address Janus offers media on and coturn may relay to; "
        "every address of this machine if unset",
    )
    turn: bool = Field(
        True, description="run coturn beside Janus when no external TURN is configured"
    )
    turn_binary: str = Field("turnserver", description="coturn's executable (PATH is searched)")
    turn_port: int = Field(3478, ge=0, le=65535, description="coturn's port; 0: a free one")
    turn_relay_ports: str = Field("21000-21999", description="UDP ports coturn relays on")
    turn_urls: str | None = Field(
        None,
        description="an external TURN server's URLs, comma-separated (as in Kubernetes: "
        "turn:coturn.example.org:3478); then coturn is not started here",
    )
    turn_secret: SecretStr | None = Field(
        None, description="the external TURN server's static-auth-secret (use-auth-secret)"
    )
    turn_credential_ttl_s: int = Field(
        3600, ge=60, description="how long a TURN credential handed out with a call lasts"
    )
    internal_url: str | None = Field(
        None,
        description="where other video-service replicas reach this one (in Kubernetes "
        "http://$(POD_IP):8000); the public URL if unset",
    )
    call_ring_s: float = Field(45.0, gt=0, description="how long a call rings before it is missed")
    call_heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="a participant silent this long is dropped from the call"
    )

    log_level: str = "INFO"
    log_file: Path | None = Field(None, description="also write the JSON log lines to this file")

    @field_validator("blob_store")
    @classmethod
    def _blob_store(cls, value: str) -> str:
        if value != "local" and not (value.startswith("s3://") and len(value) > 5):
            raise ValueError('must be "local" or "s3://bucket[/prefix]"')
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("admins", "notify_stakeholder_emails", "trusted_proxies", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as error:
                raise ValueError(
                    'give a JSON list, e.g. ["alice", "bob"], or names separated by commas, '
                    "e.g. alice,bob"
                ) from error
        return [part.strip() for part in text.split(",") if part.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("SECURECONNECT_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'secureconnect.db').resolve()}"

    @property
    def effective_release(self) -> str:
        return self.release or __version__

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def masked(self) -> dict[str, Any]:
        """Effective values for display: passwords inside URLs and secret fields are masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value())
            elif isinstance(value, Path):
                value = str(value)
            shown[name] = value
        shown["database_url"] = mask_url(self.effective_database_url)
        shown["public_url"] = self.effective_public_url
        return shown


def mask_url(url: str) -> str:
    """Hide the password part of a URL so that config output and logs never carry it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
