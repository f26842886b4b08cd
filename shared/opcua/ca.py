"""The optional site certificate authority (``ems certs --ca``) and its certificate revocation list.

With a site CA, ``ems certs`` signs every node certificate (edges, central, the HTTP API) with the CA key
instead of self-signing it, and puts the CA certificate and its CRL into the trust directories. A node then
trusts any peer certificate the CA issued, unless the CRL lists it: one new CRL file revokes a peer on every
node that receives it, without editing any node's trust list. Exact pinning of self-signed certificates
keeps working next to it (:mod:`shared.opcua.trust`).

Files (``PKI_DIR``)::

    ca/site-ca.key.pem       the CA key (keep it off the plant network; only `ems certs` needs it)
    ca/site-ca.cert.der      the CA certificate
    ca/site-ca.crl           the CRL (DER), signed by the CA
    trusted/clients/site-ca.cert.der, trusted/clients/site-ca.crl    what the edges read
    trusted/servers/site-ca.cert.der, trusted/servers/site-ca.crl    what the central reads

One level only: the CA signs node certificates directly (no intermediate CAs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.errors import Problem
from shared.opcua.pki import PkiError, PkiLayout, read_certificate
from shared.opcua.users import write_private

CA_KEY_BITS = 3072
CA_VALIDITY_DAYS = 3650
CRL_VALIDITY_DAYS = 365  # a node refuses CA-issued peers once the CRL is past its next update
CRL_RENEW_BEFORE_DAYS = 30  # `ems certs` re-signs the CRL this close to its next update


@dataclass(frozen=True)
class SiteAuthority:
    """The site CA's key and certificate."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Issue ``builder`` (subject, key, validity and extensions set) as this CA, SHA-256."""
        return (
            builder.issuer_name(self.certificate.subject)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issued(self, certificate: x509.Certificate) -> bool:
        """True when this CA signed ``certificate``."""
        return issued_by(certificate, self.certificate)


def issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    """True when ``authority`` signed ``certificate`` (issuer name and signature)."""
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_authority(certificate: x509.Certificate) -> bool:
    """A CA certificate: basicConstraints CA=true and key usage keyCertSign and cRLSign."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and usage.key_cert_sign and usage.crl_sign


def create_authority(
    site_name: str, now: datetime, *, key_bits: int = CA_KEY_BITS, validity_days: int = CA_VALIDITY_DAYS
) -> SiteAuthority:
    """A new RSA CA key and self-signed CA certificate for ``site_name`` (may sign end entities only)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"hybrid-ems site CA {site_name}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hybrid-ems"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SiteAuthority(key, certificate)


def build_crl(
    authority: SiteAuthority,
    revoked: Iterable[tuple[int, datetime]],
    now: datetime,
    *,
    number: int,
    validity_days: int = CRL_VALIDITY_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` (serial number, revocation time), valid from ``now`` for ``validity_days``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=validity_days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
    )
    for serial, when in sorted(set(revoked)):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(authority.key, hashes.SHA256())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def revoked_entries(crl: x509.CertificateRevocationList) -> list[tuple[int, datetime]]:
    return [(entry.serial_number, entry.revocation_date_utc) for entry in crl]


def crl_issued_by(crl: x509.CertificateRevocationList, authority: x509.Certificate) -> bool:
    """True when ``authority`` signed ``crl``."""
    public = authority.public_key()
    if crl.issuer != authority.subject or not isinstance(public, rsa.RSAPublicKey):
        return False
    return crl.is_signature_valid(public)


def read_crl(data: bytes) -> x509.CertificateRevocationList:
    """A DER or PEM CRL; ``ValueError`` when it is not one."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


# --------------------------------------------------------------------------------------- files


def load_authority(layout: PkiLayout) -> SiteAuthority:
    """The site CA of ``layout``; :class:`PkiError` with a one-line reason when it is missing or broken."""
    cert_path, key_path = layout.ca_cert_path, layout.ca_key_path
    for path in (cert_path, key_path):
        if not path.is_file():
            raise PkiError(str(path), [Problem("", "missing (create the site CA with `ems certs --ca`)")])
    try:
        certificate = read_certificate(cert_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(str(layout.ca_dir), [Problem("", f"site CA unreadable: {exc}")]) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PkiError(str(key_path), [Problem("", "the site CA key must be RSA")])
    if not is_authority(certificate):
        raise PkiError(str(cert_path), [Problem("", "not a CA certificate (basicConstraints, keyCertSign)")])
    if key.public_key().public_numbers() != _rsa_numbers(certificate):
        raise PkiError(str(key_path), [Problem("", f"does not belong to the certificate {cert_path}")])
    return SiteAuthority(key, certificate)


def write_authority(layout: PkiLayout, authority: SiteAuthority) -> None:
    layout.ca_dir.mkdir(parents=True, exist_ok=True)
    layout.ca_dir.chmod(0o700)
    pem = authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(layout.ca_key_path, pem)
    layout.ca_cert_path.write_bytes(authority.certificate.public_bytes(serialization.Encoding.DER))


def load_crl(layout: PkiLayout, authority: SiteAuthority) -> x509.CertificateRevocationList | None:
    """The site CA's current CRL, or None when there is none (or it is not the CA's)."""
    try:
        crl = read_crl(layout.ca_crl_path.read_bytes())
    except (OSError, ValueError):
        return None
    return crl if crl_issued_by(crl, authority.certificate) else None


def publish(layout: PkiLayout, authority: SiteAuthority, crl: x509.CertificateRevocationList) -> None:
    """Write the CRL and put the CA certificate and CRL into both trust directories."""
    der_crl = crl.public_bytes(serialization.Encoding.DER)
    write_private(layout.ca_crl_path, der_crl)
    layout.ca_crl_path.chmod(0o644)
    der_cert = authority.certificate.public_bytes(serialization.Encoding.DER)
    for directory in (layout.trusted_clients_dir, layout.trusted_servers_dir):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / layout.ca_cert_path.name).write_bytes(der_cert)
        # The CRL is replaced atomically: a node re-reading the directory never sees half a file.
        write_private(directory / layout.ca_crl_path.name, der_crl)
        (directory / layout.ca_crl_path.name).chmod(0o644)


def revoke(
    layout: PkiLayout, authority: SiteAuthority, certificate: x509.Certificate, now: datetime
) -> x509.CertificateRevocationList:
    """Add ``certificate`` to the site CA's CRL, sign and publish the new CRL; return it."""
    if not authority.issued(certificate):
        raise PkiError("--revoke", [Problem("", "the certificate was not issued by the site CA")])
    current = load_crl(layout, authority)
    entries = revoked_entries(current) if current is not None else []
    if certificate.serial_number not in {serial for serial, _ in entries}:
        entries.append((certificate.serial_number, now))
    number = (crl_number(current) if current is not None else 0) + 1
    crl = build_crl(authority, entries, now, number=number)
    publish(layout, authority, crl)
    return crl


def is_revoked(crl: x509.CertificateRevocationList | None, certificate: x509.Certificate) -> bool:
    return (
        crl is not None
        and crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    )


def _rsa_numbers(certificate: x509.Certificate) -> rsa.RSAPublicNumbers | None:
    public = certificate.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None
