"""The optional site CA: CA-issued certificates are trusted without pinning, a revoked one is refused, on
real OPC UA sessions between edge servers and the central's fleet (SignAndEncrypt over loopback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from central.edge_link import PushStatus
from shared.opcua import ca
from shared.opcua.common import edge_application_uri
from shared.opcua.pki import CENTRAL_NODE, edge_node, pki_layout, read_certificate
from shared.opcua.provision import ensure_site_pki, revoke_node
from shared.opcua.trust import PeerRole, RefusalKind, TrustList, peer_problem
from shared.opcua.users import Role, UserEntry, Users, hash_password, write_users
from shared.site import SiteConfig
from tests.support import write_site
from tests.test_opcua_link import FAST_LINK, OPERATOR_PASSWORD, edges, eventually, fleet, make_plan

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA-mode PKI for 'test-site' with cab-1 and cab-2, made once (RSA generation is slow)."""
    directory = tmp_path_factory.mktemp("site-ca")
    _, site = write_site(directory, 2)
    layout = pki_layout(site, directory / "pki")
    report = ensure_site_pki(site, layout, central_hosts=["localhost"], create_ca=True)
    assert any(line.startswith("site CA: new key") for line in report.created)
    write_users(
        layout.default_users_file,
        Users((UserEntry("central", Role.OPERATOR, hash_password(OPERATOR_PASSWORD)),)),
    )
    return layout.root


@pytest.fixture
def site_and_pki(tmp_path: Path, ca_pki: Path) -> tuple[SiteConfig, Path]:
    """A fresh site (free ports) and a private copy of the CA-mode PKI (revocations change it)."""
    pki_dir = tmp_path / "pki"
    shutil.copytree(ca_pki, pki_dir)
    _, site = write_site(tmp_path, 2, extra=FAST_LINK)
    return site, pki_dir


def test_ca_mode_issues_every_certificate_and_pins_nothing(site_and_pki: tuple[SiteConfig, Path]) -> None:
    site, pki_dir = site_and_pki
    layout = pki_layout(site, pki_dir)
    authority = ca.load_authority(layout)
    for node in (CENTRAL_NODE, edge_node("cab-1"), edge_node("cab-2")):
        assert authority.issued(read_certificate(layout.cert_path(node))), node
    assert authority.issued(read_certificate(layout.http_cert_path))
    # The trust directories hold the CA and its CRL, no pinned node certificate.
    for directory in (layout.trusted_clients_dir, layout.trusted_servers_dir):
        assert sorted(p.name for p in directory.iterdir()) == ["site-ca.cert.der", "site-ca.crl"]
    assert layout.http_trust_path.read_bytes().count(b"-----BEGIN") == 2  # CA certificate and CRL
    assert oct(layout.ca_key_path.stat().st_mode & 0o777) == "0o600"
    # A second run keeps everything; the CA is used without --ca.
    report = ensure_site_pki(site, layout, central_hosts=["localhost"])
    assert not report.created and not report.removed
    assert sum(line.startswith("site CA: kept") for line in report.kept) == 1


def test_trust_list_checks_the_ca_signature_and_the_crl(site_and_pki: tuple[SiteConfig, Path]) -> None:
    site, pki_dir = site_and_pki
    layout = pki_layout(site, pki_dir)
    trust = TrustList(layout.trusted_servers_dir)
    edge = read_certificate(layout.cert_path(edge_node("cab-1")))
    uri = edge_application_uri("test-site", "cab-1")
    assert peer_problem(edge, trust, PeerRole.SERVER, NOW, uri) is None
    assert trust.find_by_uri(uri, NOW) is None  # nothing pinned: the central asks the edge for it

    # A certificate from another CA of the same name (a forger's) is not trusted.
    other = ca.create_authority("test-site", NOW, key_bits=2048)
    assert other.certificate.subject == ca.load_authority(layout).certificate.subject
    stranger = other.sign(
        x509.CertificateBuilder()
        .subject_name(edge.subject)
        .public_key(edge.public_key())
        .serial_number(edge.serial_number)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    refusal = trust.problem(stranger, NOW)
    assert refusal is not None and refusal.kind is RefusalKind.UNTRUSTED

    # The CRL decides: missing -> unknown, expired -> unknown, listing the serial -> revoked.
    crl_copy = layout.trusted_servers_dir / "site-ca.crl"
    saved = crl_copy.read_bytes()
    crl_copy.unlink()
    refusal = trust.problem(edge, NOW)
    assert refusal is not None and refusal.kind is RefusalKind.REVOCATION_UNKNOWN
    crl_copy.write_bytes(saved)
    assert trust.problem(edge, NOW) is None
    refusal = trust.problem(edge, NOW + timedelta(days=ca.CRL_VALIDITY_DAYS + 1))
    assert refusal is not None and refusal.kind is RefusalKind.REVOCATION_UNKNOWN
    assert "expired" in refusal.message
    # A CRL signed by another key for the same CA name is ignored (it cannot un-revoke or revoke).
    fake = ca.build_crl(other, [(edge.serial_number, NOW)], NOW, number=99)
    (layout.trusted_servers_dir / "fake.crl").write_bytes(fake.public_bytes(Encoding.DER))
    assert trust.problem(edge, NOW) is None
    revoke_node(layout, edge_node("cab-1"), NOW)
    refusal = peer_problem(edge, trust, PeerRole.SERVER, NOW, uri)
    assert refusal is not None and refusal.kind is RefusalKind.REVOKED
    # The next `ems certs` issues the revoked node a new certificate, which is trusted again.
    report = ensure_site_pki(site, layout, central_hosts=["localhost"])
    assert any(
        line.startswith(f"{edge_node('cab-1')}: new key") and "(revoked)" in line for line in report.created
    )
    renewed = read_certificate(layout.cert_path(edge_node("cab-1")))
    assert renewed.serial_number != edge.serial_number and trust.problem(renewed, NOW) is None
    assert trust.problem(edge, NOW) is not None  # the old one stays revoked


def test_self_signed_pins_keep_working_next_to_the_ca(
    site_and_pki: tuple[SiteConfig, Path], tmp_path: Path
) -> None:
    """A third-party client with a self-signed certificate (a SCADA, say) is pinned as before."""
    site, pki_dir = site_and_pki
    layout = pki_layout(site, pki_dir)
    (tmp_path / "plain").mkdir()
    _, plain_site = write_site(tmp_path / "plain", 1)
    plain = pki_layout(plain_site, tmp_path / "plain" / "pki")
    ensure_site_pki(plain_site, plain, central_hosts=["localhost"])
    scada = read_certificate(plain.cert_path(CENTRAL_NODE))  # self-signed, made without a CA
    trust = TrustList(layout.trusted_clients_dir)
    assert trust.problem(scada, NOW) is not None
    shutil.copy(plain.cert_path(CENTRAL_NODE), layout.trusted_clients_dir / "scada.cert.der")
    assert trust.problem(scada, NOW) is None


async def test_ca_mode_accepts_a_ca_issued_edge_and_refuses_a_revoked_one(
    site_and_pki: tuple[SiteConfig, Path],
) -> None:
    site, pki_dir = site_and_pki
    layout = pki_layout(site, pki_dir)
    async with edges(site, pki_dir, "cab-1", "cab-2") as running:
        async with fleet(site, pki_dir) as central:
            assert await central.wait_connected(20.0), central.last_errors()
            outcomes = await central.push_plan(make_plan(site, "plan-ca-1"))
            assert {o.status for o in outcomes.values()} == {PushStatus.ACCEPTED}

        # Revoke cab-2's edge: a new CRL in the central's trust directory, nothing else touched.
        revoke_node(layout, edge_node("cab-2"), datetime.now(UTC))
        await running.stop("cab-2")
        await running.start("cab-2")
        async with fleet(site, pki_dir) as central:
            assert await central.wait_connected(20.0, ["cab-1"]), central.last_errors()
            await eventually(lambda: "revoked" in central.last_errors().get("cab-2", ""), 20.0)
            assert not central.connected()["cab-2"]
            outcomes = await central.push_plan(make_plan(site, "plan-ca-2"))
            assert outcomes["cab-1"].status is PushStatus.ACCEPTED
            assert outcomes["cab-2"].status is PushStatus.UNREACHABLE


async def test_an_edge_refuses_a_revoked_central(site_and_pki: tuple[SiteConfig, Path]) -> None:
    site, pki_dir = site_and_pki
    layout = pki_layout(site, pki_dir)
    async with edges(site, pki_dir, "cab-1"):
        revoke_node(layout, CENTRAL_NODE, datetime.now(UTC))  # the edges read trusted/clients/site-ca.crl
        async with fleet(site, pki_dir) as central:
            await eventually(lambda: "BadCertificateRevoked" in central.last_errors().get("cab-1", ""), 20.0)
            assert not central.connected()["cab-1"]


def test_ems_certs_ca_and_revoke_on_the_command_line(tmp_path: Path) -> None:
    path, site = write_site(tmp_path, 1)
    pki = tmp_path / "pki"
    base = [sys.executable, "-m", "ems", "certs", "--site", str(path), "--out", str(pki)]
    made = subprocess.run([*base, "--ca"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "created  site CA" in made.stdout and "issued by the site CA" in made.stdout
    revoked = subprocess.run([*base, "--revoke", "edge-cab-1"], capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked  edge-cab-1" in revoked.stdout
    layout = pki_layout(site, pki)
    crl = ca.read_crl((layout.trusted_servers_dir / "site-ca.crl").read_bytes())
    edge = read_certificate(layout.cert_path(edge_node("cab-1")))
    assert ca.is_revoked(crl, edge)
    unknown = subprocess.run([*base, "--revoke", "edge-cab-9"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "edge-cab-9" in unknown.stderr and "edge-cab-1" in unknown.stderr
    no_ca = tmp_path / "no-ca"
    refused = subprocess.run(
        [*base[:-1], str(no_ca), "--revoke", "central"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "ems certs --ca" in refused.stderr
