"""Who a client is: the key of its dedup memory and of its per-client limits.

Trust model (README, "Who a client is"):
- `header` (default): `x-sentinel-client-id` as sent. Nothing is verified, so any caller can
  claim any id (and use up that id's stream slots): for a trusted network only.
- `mtls`: the identity of the verified TLS client certificate (its SAN URI/DNS name or common
  name, as gRPC reports `peer_identities`). The header, if sent, only names a sub-client
  within it (`<identity>/<header>`), so one certificate cannot touch another's batches.
- `xfcc`: the `URI=` (SPIFFE id) of the last element of `x-forwarded-client-cert`, which an
  Istio/Envoy sidecar sets from the mTLS peer of the inbound connection. Trusted only because
  the sidecar owns that header: use it only where the orchestrator's port cannot be reached
  except through the sidecar (STRICT PeerAuthentication).
Per-client stream limits count the authenticated identity (not the sub-client); callers
without any identity share the anonymous limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sentinel.errors import InvalidArgument

CLIENT_ID_HEADER = "x-sentinel-client-id"
XFCC_HEADER = "x-forwarded-client-cert"


class Unauthenticated(ValueError):
    """No identity where the configured mode requires one; becomes UNAUTHENTICATED."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    principal: str  # who is limited: authenticated identity, the header (header mode) or ""
    scope: str  # dedup scope: principal plus the client's own id; "" = not deduplicated

    @property
    def anonymous(self) -> bool:
        return not self.principal


def header(metadata: Sequence[tuple[str, str | bytes]], name: str) -> str:
    for key, value in metadata:
        if key == name and isinstance(value, str):
            return value
    return ""


def resolve(
    mode: str,
    metadata: Sequence[tuple[str, str | bytes]],
    peer_identities: Sequence[bytes] | None,
    max_client_id_length: int,
) -> ClientIdentity:
    client_id = header(metadata, CLIENT_ID_HEADER)
    if len(client_id) > max_client_id_length:
        raise InvalidArgument(
            CLIENT_ID_HEADER,
            f"{len(client_id)} characters exceeds the limit of {max_client_id_length}",
        )
    if client_id and (not client_id.isprintable() or not client_id.strip()):
        raise InvalidArgument(CLIENT_ID_HEADER, "must be printable and not blank")
    if mode == "header":
        return ClientIdentity(client_id, client_id)
    if mode == "mtls":
        if not peer_identities:
            raise Unauthenticated(
                "a verified client certificate is required (client_identity=mtls)"
            )
        principal = "mtls:" + peer_identities[0].decode("utf-8", "replace")
    elif mode == "xfcc":
        uri = xfcc_uri(header(metadata, XFCC_HEADER))
        if not uri:
            raise Unauthenticated(
                f"{XFCC_HEADER} with a URI is required (client_identity=xfcc; is the sidecar "
                "terminating mTLS?)"
            )
        principal = "xfcc:" + uri
    else:
        raise ValueError(f"unknown client_identity mode {mode!r}")
    return ClientIdentity(principal, f"{principal}/{client_id}")


def xfcc_uri(value: str) -> str:
    """URI= of the last element (the hop nearest to us) of an x-forwarded-client-cert value."""
    if not value:
        return ""
    last = _split(value, ",")[-1]
    for pair in _split(last, ";"):
        key, sep, raw = pair.partition("=")
        if sep and key.strip().lower() == "uri":
            return raw.strip().strip('"')
    return ""


def _split(value: str, separator: str) -> list[str]:
    """Split outside double quotes (Subject="CN=a,O=b" contains commas)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
