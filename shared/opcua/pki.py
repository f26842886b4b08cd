"""Certificates and keys of the site: where they live and how they are made and loaded.

Layout of a PKI directory (``[opcua] pki_dir``)::

    own/central.key.pem   own/central.cert.der            the central's OPC UA client identity
    own/edge-ID.key.pem   own/edge-ID.cert.der            one OPC UA server identity per cabinet
    own/central-http.key.pem  own/central-http.cert.pem   the HTTP API's TLS identity (shared.tls)
    trusted/clients/      client certificates the edges accept (the central's, or the site CA and its CRL)
    trusted/servers/      server certificates the central accepts (the edges', or the site CA and its CRL)
    trusted/http-ca.pem   what HTTP clients verify the API's certificate against
    ca/                   the optional site CA (shared.opcua.ca)
    users.toml            users, roles and password hashes (shared.opcua.users)

Each OPC UA certificate (RSA, SHA-256) is self-signed, or issued by the site CA when there is one, and
carries the node's application URI (:mod:`shared.opcua.common`) in its subjectAltName, which OPC UA
requires to match the URI the application announces. Trust is explicit: a peer is accepted only if its
certificate is in the trust directory or the site CA there issued it (:mod:`shared.opcua.trust`).
An edge machine needs its own key and certificate, ``trusted/clients`` and ``users.toml``; the central
needs its own key and certificate and ``trusted/servers``. :mod:`shared.opcua.provision` makes them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import InputError, Problem
from shared.opcua.users import write_private
from shared.site import SiteConfig

if TYPE_CHECKING:
    from shared.opcua.ca import SiteAuthority

_log = logging.getLogger(__name__)

DEFAULT_KEY_BITS = 2048
DEFAULT_VALIDITY_DAYS = 730
RENEW_BEFORE_DAYS = 30  # `ems certs` renews, and nodes warn about, certificates this close to expiry


class PkiError(InputError):
    """A missing, unreadable or unsuitable key or certificate."""


@dataclass(frozen=True)
class PkiLayout:
    """Paths inside one PKI directory."""

    root: Path

    @property
    def own_dir(self) -> Path:
        return self.root / "own"

    @property
    def trusted_clients_dir(self) -> Path:
        return self.root / "trusted" / "clients"

    @property
    def trusted_servers_dir(self) -> Path:
        return self.root / "trusted" / "servers"

    @property
    def default_users_file(self) -> Path:
        return self.root / "users.toml"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_key_path(self) -> Path:
        return self.ca_dir / "site-ca.key.pem"

    @property
    def ca_cert_path(self) -> Path:
        return self.ca_dir / "site-ca.cert.der"

    @property
    def ca_crl_path(self) -> Path:
        return self.ca_dir / "site-ca.crl"

    @property
    def http_cert_path(self) -> Path:
        """The HTTP API's TLS certificate (PEM), ``[central] tls_cert_file``."""
        return self.own_dir / f"{CENTRAL_HTTP_NODE}.cert.pem"

    @property
    def http_trust_path(self) -> Path:
        """What HTTP clients verify the API's certificate against (PEM): the site CA, else the certificate."""
        return self.root / "trusted" / "http-ca.pem"

    def key_path(self, node: str) -> Path:
        return self.own_dir / f"{node}.key.pem"

    def cert_path(self, node: str) -> Path:
        return self.own_dir / f"{node}.cert.der"

    def trusted_copy(self, node: str) -> Path:
        directory = self.trusted_clients_dir if node == CENTRAL_NODE else self.trusted_servers_dir
        return directory / f"{node}.cert.der"


CENTRAL_NODE = "central"
CENTRAL_HTTP_NODE = "central-http"  # the HTTP API's TLS identity (own/central-http.key.pem, .cert.pem)


def edge_node(cabinet_id: str) -> str:
    """File stem of a cabinet's edge identity."""
    return f"edge-{cabinet_id}"


def pki_layout(site: SiteConfig, pki_dir: Path | None = None) -> PkiLayout:
    """The PKI directory: ``pki_dir`` if given, else ``[opcua] pki_dir`` (relative to the working dir)."""
    return PkiLayout(Path(pki_dir) if pki_dir is not None else Path(site.opcua.pki_dir))


def users_path(site: SiteConfig, layout: PkiLayout) -> Path:
    """``[opcua] users_file`` if set, else ``users.toml`` in the PKI directory."""
    return Path(site.opcua.users_file) if site.opcua.users_file else layout.default_users_file


@dataclass(frozen=True)
class NodeIdentity:
    """A node's certificate and private key, loaded and checked."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def certificate_uris(certificate: x509.Certificate) -> list[str]:
    """The URIs in the certificate's subjectAltName (empty when it has none)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint, hex, as operators compare it (``openssl x509 -fingerprint -sha256``)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def describe(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "?"
    return f"CN={common_name!r} sha256={fingerprint(certificate)[:16]}…"


def read_certificate(path: Path) -> x509.Certificate:
    """Load a DER or PEM certificate; ``ValueError`` when it is not one."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_identity(layout: PkiLayout, node: str, application_uri: str, now: datetime) -> NodeIdentity:
    """Load and check a node's key and certificate; :class:`PkiError` with a one-line reason otherwise.

    ``now`` is wall-clock time: certificate validity is about the real world, not a simulated day.
    """
    cert_path, key_path = layout.cert_path(node), layout.key_path(node)
    hint = "run `ems certs --site SITE` to create it"
    for path in (cert_path, key_path):
        if not path.is_file():
            raise PkiError(str(path), [Problem("", f"missing ({hint})")])
    try:
        certificate = read_certificate(cert_path)
    except (OSError, ValueError) as exc:
        raise PkiError(str(cert_path), [Problem("", f"not a certificate: {exc}")]) from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(str(key_path), [Problem("", f"not an unencrypted PEM private key: {exc}")]) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PkiError(str(key_path), [Problem("", "OPC UA security policies need an RSA key")])
    if key.public_key().public_numbers() != _rsa_public(certificate).public_numbers():
        raise PkiError(str(key_path), [Problem("", f"does not belong to the certificate {cert_path}")])
    problem = identity_problem(certificate, application_uri, now)
    if problem is not None:
        raise PkiError(str(cert_path), [Problem("", f"{problem} ({hint})")])
    remaining = certificate.not_valid_after_utc - now
    if remaining < timedelta(days=RENEW_BEFORE_DAYS):
        _log.warning(
            "certificate %s expires in %d days (%s); renew it with `ems certs`",
            cert_path,
            remaining.days,
            certificate.not_valid_after_utc.date(),
        )
    return NodeIdentity(certificate, key, cert_path, key_path)


def identity_problem(certificate: x509.Certificate, application_uri: str, now: datetime) -> str | None:
    """Why ``certificate`` cannot serve as the identity ``application_uri`` now, or None."""
    if application_uri not in certificate_uris(certificate):
        found = ", ".join(certificate_uris(certificate)) or "none"
        return f"certificate is for URI {found}, not {application_uri}"
    if now < certificate.not_valid_before_utc:
        return f"certificate is not valid before {certificate.not_valid_before_utc.isoformat()}"
    if now >= certificate.not_valid_after_utc:
        return f"certificate expired on {certificate.not_valid_after_utc.isoformat()}"
    return None


def _rsa_public(certificate: x509.Certificate) -> rsa.RSAPublicKey:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise PkiError("certificate", [Problem("", "OPC UA security policies need an RSA certificate")])
    return key


def create_identity(
    common_name: str,
    application_uri: str,
    hosts: Sequence[str],
    *,
    server: bool,
    now: datetime,
    key_bits: int = DEFAULT_KEY_BITS,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    issuer: SiteAuthority | None = None,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and an OPC UA application instance certificate (OPC 10000-6 6.2.2), self-signed, or
    signed by the site CA ``issuer``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri), *host_names(hosts)]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else []
    usages = usages or [ExtendedKeyUsageOID.CLIENT_AUTH]
    public = key.public_key()
    builder = (
        subject_builder(common_name, public, now, validity_days)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=issuer is None,  # OPC UA: a self-signed certificate signs itself
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if issuer is not None:
        return key, issuer.sign(builder)
    name = subject_name(common_name)
    builder = builder.issuer_name(name).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
    )
    return key, builder.sign(key, hashes.SHA256())


def subject_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hybrid-ems"),
        ]
    )


def subject_builder(
    common_name: str, public: CertificatePublicKeyTypes, now: datetime, validity_days: int
) -> x509.CertificateBuilder:
    """An end-entity certificate's subject, key, serial, validity, basic constraints and key identifier;
    the caller adds the rest and signs."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # Backdated a little so a peer whose clock lags by minutes still accepts a fresh certificate.
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for host names and IP addresses (duplicates and empty names dropped)."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def certificate_hosts(certificate: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses in the certificate's subjectAltName."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    addresses = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)) | addresses


def write_identity(
    layout: PkiLayout, node: str, key: rsa.RSAPrivateKey, certificate: x509.Certificate
) -> None:
    """Write the key (mode 0600, unencrypted PEM: nodes start unattended) and the DER certificate."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(layout.key_path(node), pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    layout.cert_path(node).write_bytes(der)
