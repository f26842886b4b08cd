"""Certificates and keys of the OPC UA link: where they live and how ``ems certs`` makes them.

Layout of a PKI directory (``[opcua] pki_dir``)::

    own/central.key.pem   own/central.cert.der            the central's client identity
    own/edge-ID.key.pem   own/edge-ID.cert.der            one server identity per cabinet
    trusted/clients/      client certificates the edges accept (the central's)
    trusted/servers/      server certificates the central accepts (the edges')
    users.toml            users, roles and password hashes (shared.opcua.users)

Each certificate is self-signed (RSA, SHA-256) and carries the node's application URI
(:mod:`shared.opcua.common`) in its subjectAltName, which OPC UA requires to match the URI the application
announces. Trust is explicit: a peer is accepted only if its certificate is in the trust directory.
An edge machine needs its own key and certificate, ``trusted/clients`` and ``users.toml``; the central
needs its own key and certificate and ``trusted/servers``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import InputError, Problem
from shared.opcua.common import central_application_uri, edge_application_uri, endpoint_host
from shared.opcua.users import write_private
from shared.site import SiteConfig

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

    def key_path(self, node: str) -> Path:
        return self.own_dir / f"{node}.key.pem"

    def cert_path(self, node: str) -> Path:
        return self.own_dir / f"{node}.cert.der"

    def trusted_copy(self, node: str) -> Path:
        directory = self.trusted_clients_dir if node == CENTRAL_NODE else self.trusted_servers_dir
        return directory / f"{node}.cert.der"


CENTRAL_NODE = "central"


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
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and a self-signed OPC UA application instance certificate (OPC 10000-6 6.2.2)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hybrid-ems"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else []
    usages = usages or [ExtendedKeyUsageOID.CLIENT_AUTH]
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # Backdated a little so a peer whose clock lags by minutes still accepts a fresh certificate.
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    return key, builder.sign(key, hashes.SHA256())


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


@dataclass
class PkiReport:
    """What ``ensure_site_pki`` did, one line per node."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def ensure_site_pki(
    site: SiteConfig,
    layout: PkiLayout,
    *,
    now: datetime | None = None,
    force: bool = False,
    key_bits: int = DEFAULT_KEY_BITS,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    central_hosts: Sequence[str] = (),
) -> PkiReport:
    """Create the keys and certificates a site needs and fill the trust directories.

    A node's existing key and certificate are kept when they are usable (right URI, key matches, not within
    RENEW_BEFORE_DAYS of expiry) unless ``force``; everything missing or unusable is created.
    """
    moment = now or datetime.now(UTC)
    for directory in (layout.own_dir, layout.trusted_clients_dir, layout.trusted_servers_dir):
        directory.mkdir(parents=True, exist_ok=True)
    layout.own_dir.chmod(0o700)
    report = PkiReport()
    hosts = list(central_hosts) or ["localhost", socket.gethostname()]
    nodes: list[tuple[str, str, str, list[str], bool]] = [
        (
            CENTRAL_NODE,
            f"hybrid-ems central {site.site.name}",
            central_application_uri(site.site.name),
            hosts,
            False,
        )
    ]
    for cabinet in site.cabinets:
        nodes.append(
            (
                edge_node(cabinet.id),
                f"hybrid-ems edge {cabinet.id} {site.site.name}",
                edge_application_uri(site.site.name, cabinet.id),
                _edge_hosts(endpoint_host(cabinet.opcua_endpoint)),
                True,
            )
        )
    for node, common_name, uri, node_hosts, is_server in nodes:
        reason = None if force else _reuse_problem(layout, node, uri, moment)
        if force or reason is not None:
            key, certificate = create_identity(
                common_name,
                uri,
                node_hosts,
                server=is_server,
                now=moment,
                key_bits=key_bits,
                validity_days=validity_days,
            )
            write_identity(layout, node, key, certificate)
            why = "forced" if force else reason
            report.created.append(f"{node}: new key and certificate for {uri} ({why})")
        else:
            report.kept.append(f"{node}: kept {layout.cert_path(node)}")
        layout.trusted_copy(node).write_bytes(layout.cert_path(node).read_bytes())
    return report


def _edge_hosts(host: str) -> list[str]:
    """Names for an edge certificate: its endpoint host, and this machine's name when that is loopback
    (asyncua warns when the local host name is missing; it only fits when the edge runs here)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return [host, "localhost", socket.gethostname()] if loopback else [host]


def _reuse_problem(layout: PkiLayout, node: str, uri: str, now: datetime) -> str | None:
    if not (layout.cert_path(node).is_file() and layout.key_path(node).is_file()):
        return "none yet"
    try:
        identity = load_identity(layout, node, uri, now)
    except PkiError as exc:
        return exc.problems[0].message
    if identity.certificate.not_valid_after_utc - now < timedelta(days=RENEW_BEFORE_DAYS):
        return "expires soon"
    return None
