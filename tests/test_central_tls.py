"""TLS of the central's HTTP API on loopback: TLS 1.2+ only, verified against the site's PKI (self-signed or
site CA, with its CRL), and the refusal to serve plain HTTP off loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from central.service.app import CentralService
from central.service.listener import exposure_problem, listener_context
from shared.clock import SimulatedClock
from shared.opcua.pki import pki_layout
from shared.opcua.provision import ensure_site_pki, revoke_node
from shared.tls import client_context
from tests.test_central_api import DAY_START, EXAMPLES, TOKEN, SiteFiles, make_site, service_config

TLS_KEYS = """tls_cert_file = "{pki}/own/central-http.cert.pem"
tls_key_file = "{pki}/own/central-http.key.pem"
"""


def tls_site(directory: Path) -> SiteFiles:
    return make_site(directory, central=TLS_KEYS.format(pki=directory / "pki"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return tls_site(tmp_path_factory.mktemp("central-tls"))


@contextlib.asynccontextmanager
async def serving(files: SiteFiles, directory: Path) -> AsyncIterator[CentralService]:
    config = replace(
        service_config(files, directory / "central.sqlite3"), tokens_file=directory / "api-tokens.toml"
    )
    async with CentralService(
        files.site, SimulatedClock(DAY_START + timedelta(minutes=5), 60.0), config
    ) as svc:
        yield svc


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    """A real TLS handshake with the service; the protocol version and cipher agreed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), None if cipher is None else cipher[0]


def legacy_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers exactly ``version`` (security level 0: old protocols allowed on our side)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only the protocol version is under test here
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    return context


async def test_the_api_speaks_tls_12_or_newer_only(files: SiteFiles, tmp_path: Path) -> None:
    layout = pki_layout(files.site)
    async with serving(files, tmp_path) as svc:
        assert svc.url.startswith("https://127.0.0.1:")
        verified = client_context(layout.http_trust_path)
        async with httpx.AsyncClient(base_url=svc.url, verify=verified) as client:
            assert (await client.get("/healthz")).status_code == 200
            answer = await client.post("/api/v1/optimize", headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 409  # authenticated over TLS; nothing uploaded yet
        # TLS 1.1 (and older) is refused by the server: it answers the client's hello with a protocol
        # version alert or just closes (asyncio's TLS transport does not always flush the alert).
        with pytest.warns(DeprecationWarning), pytest.raises(ssl.SSLError) as refused:
            client_11 = legacy_client(ssl.TLSVersion.TLSv1_1)
            await asyncio.to_thread(handshake, svc.http_port, client_11)
        reason = str(refused.value).upper()
        assert "PROTOCOL_VERSION" in reason or "UNEXPECTED_EOF" in reason, reason
        # The same client offering TLS 1.2 gets a forward-secret AEAD suite: the refusal was the version.
        version, cipher = await asyncio.to_thread(
            handshake, svc.http_port, legacy_client(ssl.TLSVersion.TLSv1_2)
        )
        assert version == "TLSv1.2" and cipher is not None
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
        # A client that does not trust the site's PKI refuses the certificate; plain HTTP gets nothing.
        async with httpx.AsyncClient(base_url=svc.url, verify=client_context(None)) as stranger:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.get("/healthz")
        async with httpx.AsyncClient(base_url=svc.url.replace("https", "http")) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/healthz")


def test_ems_upload_and_reset_interlock_verify_the_service_against_the_site_pki(
    files: SiteFiles, tmp_path: Path
) -> None:
    env = {**os.environ, "EMS_API_TOKEN": TOKEN}
    env.pop("EMS_CENTRAL_URL", None)
    (tmp_path / "other").mkdir()
    stranger = make_site(
        tmp_path / "other"
    )  # another site's PKI: not what this service's certificate is from

    async def scenario() -> list[subprocess.CompletedProcess[str]]:
        async with serving(files, tmp_path):
            upload = [
                sys.executable,
                "-m",
                "ems",
                "upload",
                str(EXAMPLES / "day-ahead.csv"),
                "--site",
                str(files.path),
            ]
            wrong_ca = ["--cafile", str(pki_layout(stranger.site).http_trust_path)]
            reset = [sys.executable, "-m", "ems", "reset-interlock", "cab-1", "--site", str(files.path)]
            return [
                await asyncio.to_thread(
                    subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
                )
                for command in (upload, [*upload, *wrong_ca], reset, [*reset, *wrong_ca])
            ]

    good, wrong, reset_good, reset_wrong = asyncio.run(scenario())
    assert good.returncode == 1, good.stderr  # accepted; no edge runs here, so not every edge took it
    assert "accepted (csv): 96 x 15 min" in good.stdout
    assert wrong.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in wrong.stderr
    # The reset went through TLS and the operator check to the edge link (no edge runs here: 503).
    assert reset_good.returncode == 1, (reset_good.stdout, reset_good.stderr)
    assert reset_good.stderr.startswith("error: HTTP 503: reset-interlock of cab-1 not sent: edge cab-1 is")
    assert reset_wrong.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in reset_wrong.stderr


async def test_a_ca_issued_api_certificate_is_refused_once_revoked(tmp_path: Path) -> None:
    files = tls_site(tmp_path)
    layout = pki_layout(files.site)
    report = ensure_site_pki(files.site, layout, create_ca=True)
    assert any(
        "central-http: TLS certificate" in line and "not issued by the site CA" in line
        for line in report.created
    )
    async with serving(files, tmp_path) as svc:
        async with httpx.AsyncClient(
            base_url=svc.url, verify=client_context(layout.http_trust_path)
        ) as client:
            assert (await client.get("/healthz")).status_code == 200
        revoke_node(layout, "central-http", datetime.now(UTC))  # new CRL in trusted/http-ca.pem
        async with httpx.AsyncClient(
            base_url=svc.url, verify=client_context(layout.http_trust_path)
        ) as client:
            with pytest.raises(httpx.ConnectError, match="revoked"):
                await client.get("/healthz")


# ------------------------------------------------------------------------------------ exposure


def test_exposure_rule() -> None:
    assert exposure_problem("127.0.0.1", tls=False, insecure_http=False) is None
    assert exposure_problem("localhost", tls=False, insecure_http=False) is None
    assert exposure_problem("::1", tls=False, insecure_http=False) is None
    for host in ("0.0.0.0", "::", "192.0.2.10", "central.plant.example"):
        problem = exposure_problem(host, tls=False, insecure_http=False)
        assert problem is not None and "tls_cert_file" in problem and "insecure_http" in problem, host
        assert exposure_problem(host, tls=False, insecure_http=True) is None
        assert exposure_problem(host, tls=True, insecure_http=False) is None


def test_insecure_http_off_loopback_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    # The check is called directly: nothing is bound.
    with caplog.at_level(logging.WARNING):
        assert listener_context("0.0.0.0", None, None, insecure_http=True) is None
    assert "PLAIN HTTP" in caplog.text and "insecure_http" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert listener_context("127.0.0.1", None, None, insecure_http=True) is None
    assert not caplog.text  # plain HTTP on loopback is not a risk worth a warning


def test_ems_central_refuses_plain_http_on_a_non_loopback_address(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    text = site.path.read_text()
    env = {**os.environ, site.site.opcua.central_password_env: site.password, "EMS_API_TOKEN": TOKEN}
    command = [sys.executable, "-m", "ems", "central", "--site", str(site.path)]

    site.path.write_text(text.replace('http_address = "127.0.0.1:', 'http_address = "0.0.0.0:'))
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert (
        "central.http_address" in refused.stderr and "'0.0.0.0' is not a loopback address" in refused.stderr
    )
    assert not (tmp_path / "central.sqlite3").exists()  # refused before anything started

    missing = TLS_KEYS.format(pki=tmp_path / "nowhere")
    site.path.write_text(text.replace("[central]\n", f"[central]\n{missing}"))
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert (
        refused.returncode == 2
        and "central.tls_cert_file" in refused.stderr
        and "ems certs" in refused.stderr
    )
