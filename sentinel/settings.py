"""Settings shared by every role (each role's frozen settings class extends this)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    """Address the gRPC server binds to."""
    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; unset = no endpoint."""
    allow_insecure: bool = False
    """Allow plaintext gRPC on a non-loopback address (inside Istio the sidecar does mTLS)."""
    tls_cert_file: str | None = None
    """PEM server certificate; with tls_key_file enables TLS."""
    tls_key_file: str | None = None
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    log_level: str = "INFO"
    """Log level (DEBUG, INFO, WARNING, ERROR)."""
    log_format: str = "json"
    """Log line format: json (one object per line) or text (the message, then fields as k=v)."""
    drain_delay_seconds: float = Field(default=5.0, ge=0)
    """On SIGTERM: time between reporting NOT_SERVING and ending streams, so routers notice."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM: time in-flight RPCs get to finish before they are cancelled."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent, in bytes."""
    allocator_keep_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Freed memory kept for reuse rather than returned to the OS (glibc; 0 = its defaults)."""

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file and self.tls_key_file)

    @model_validator(mode="after")
    def _plaintext_only_where_safe(self) -> ServerSettings:
        if (
            self.tls_cert_file
            and not self.tls_key_file
            or self.tls_key_file
            and not self.tls_cert_file
        ):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if not self.tls_enabled and not self.allow_insecure and not is_loopback(self.host):
            raise ValueError(
                f"refusing plaintext gRPC on {self.host!r}: configure TLS "
                "(SENTINEL_TLS_CERT_FILE/SENTINEL_TLS_KEY_FILE) or set "
                "SENTINEL_ALLOW_INSECURE=true (e.g. behind an Istio sidecar that does mTLS)"
            )
        return self


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
