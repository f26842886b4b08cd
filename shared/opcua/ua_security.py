"""asyncua glue for the link's security: policy names, and certificate checks asyncua can call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from cryptography import x509

from shared.opcua.trust import PeerRole, Refusal, RefusalKind, TrustList, peer_problem
from shared.opcua.ua_types import StatusCodes

_log = logging.getLogger(__name__)

# SignAndEncrypt endpoint types the edge offers, by the names used in [opcua] security_policies.
SIGN_AND_ENCRYPT: dict[str, ua.SecurityPolicyType] = {
    "Aes256_Sha256_RsaPss": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
}

_STATUS: dict[RefusalKind, int] = {
    RefusalKind.UNTRUSTED: StatusCodes.BadCertificateUntrusted,
    RefusalKind.REVOKED: StatusCodes.BadCertificateRevoked,
    RefusalKind.REVOCATION_UNKNOWN: StatusCodes.BadCertificateRevocationUnknown,
    RefusalKind.TIME: StatusCodes.BadCertificateTimeInvalid,
    RefusalKind.URI: StatusCodes.BadCertificateUriInvalid,
    RefusalKind.USAGE: StatusCodes.BadCertificateUseNotAllowed,
}


def first_der_certificate(data: bytes) -> bytes:
    """The first certificate of a DER chain (OPC UA may send the chain concatenated)."""
    if len(data) < 2 or data[0] != 0x30:
        raise ValueError("not a DER certificate")
    length = data[1]
    if length < 0x80:
        return data[: 2 + length]
    count = length & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise ValueError("not a DER certificate")
    total = 2 + count + int.from_bytes(data[2 : 2 + count], "big")
    if total > len(data):
        raise ValueError("truncated DER certificate")
    return data[:total]


class CertificateGate:
    """Checks peer certificates against a trust list (see :func:`shared.opcua.trust.peer_problem`).

    An instance is an asyncua certificate validator (``await gate(cert, app_description)`` raises a
    ``ServiceError`` with the matching ``BadCertificate*`` status) and offers :meth:`check_der` for the
    certificate a secure channel is opened with. ``expected_uri`` pins the peer to one application URI.
    """

    def __init__(self, trust: TrustList, role: PeerRole, expected_uri: str | None = None) -> None:
        self.trust = trust
        self.role = role
        self.expected_uri = expected_uri

    def check(self, certificate: x509.Certificate, claimed_uri: str | None = None) -> Refusal | None:
        now = datetime.now(UTC)  # certificate validity is wall-clock time, whatever the EMS clock says
        refusal = peer_problem(certificate, self.trust, self.role, now, claimed_uri)
        if refusal is None and self.expected_uri is not None:
            refusal = peer_problem(certificate, self.trust, self.role, now, self.expected_uri)
        return refusal

    def check_der(self, data: bytes | None) -> Refusal | None:
        if not data:
            return Refusal(RefusalKind.UNTRUSTED, "the peer presented no certificate")
        try:
            certificate = x509.load_der_x509_certificate(first_der_certificate(data))
        except ValueError as exc:
            return Refusal(RefusalKind.UNTRUSTED, f"the peer certificate cannot be parsed: {exc}")
        return self.check(certificate)

    async def __call__(self, certificate: x509.Certificate, description: ua.ApplicationDescription) -> None:
        claimed = description.ApplicationUri if description is not None else None
        refusal = self.check(certificate, claimed or None)
        if refusal is not None:
            _log.warning("refused %s certificate: %s", self.role.value, refusal)
            raise ServiceError(_STATUS[refusal.kind])
