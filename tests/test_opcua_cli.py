"""``ems certs`` and ``ems bench push`` as a user runs them."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ems.cli import main
from shared.opcua.common import central_application_uri, edge_application_uri
from shared.opcua.pki import CENTRAL_NODE, edge_node, load_identity, pki_layout
from shared.opcua.users import Role, load_users, verify_password
from tests.support import write_site


def _password_after(label: str, output: str) -> str:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if label in line and "shown only now" in line)
    return lines[index + 1].strip()


def test_certs_creates_a_site_pki_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMS_OPCUA_PASSWORD", raising=False)
    monkeypatch.delenv("EMS_OPCUA_VIEWER_PASSWORD", raising=False)
    site_path, site = write_site(tmp_path, 2)
    out = tmp_path / "pki"
    assert main(["certs", "--site", str(site_path), "--out", str(out), "--viewer", "ui"]) == 0
    printed = capsys.readouterr().out
    central_password = _password_after("'central' (operator)", printed)
    viewer_password = _password_after("'ui' (viewer)", printed)
    layout = pki_layout(site, out)
    now = datetime.now(UTC)
    load_identity(layout, CENTRAL_NODE, central_application_uri("test-site"), now)
    for cabinet_id in ("cab-1", "cab-2"):
        load_identity(layout, edge_node(cabinet_id), edge_application_uri("test-site", cabinet_id), now)
        assert (layout.trusted_servers_dir / f"edge-{cabinet_id}.cert.der").is_file()
    assert (layout.trusted_clients_dir / "central.cert.der").is_file()
    assert stat.S_IMODE(layout.own_dir.stat().st_mode) == 0o700
    users = load_users(layout.default_users_file)
    central, viewer = users.find("central"), users.find("ui")
    assert central is not None and central.role is Role.OPERATOR
    assert viewer is not None and viewer.role is Role.VIEWER
    assert verify_password(central_password, central.password_hash)
    assert verify_password(viewer_password, viewer.password_hash)
    assert central_password not in layout.default_users_file.read_text(encoding="utf-8")

    # Run again: everything is kept, no password is printed.
    certificate = layout.cert_path(CENTRAL_NODE).read_bytes()
    assert main(["certs", "--site", str(site_path), "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "shown only now" not in again and "created" not in again
    assert layout.cert_path(CENTRAL_NODE).read_bytes() == certificate
    assert load_users(layout.default_users_file) == users

    # The password from the environment replaces the central's; the viewer stays.
    monkeypatch.setenv("EMS_OPCUA_PASSWORD", "from-the-environment")
    assert main(["certs", "--site", str(site_path), "--out", str(out)]) == 0
    assert "EMS_OPCUA_PASSWORD" in capsys.readouterr().out
    updated = load_users(layout.default_users_file)
    assert verify_password("from-the-environment", updated.find("central").password_hash)  # type: ignore[union-attr]
    assert updated.find("ui") == viewer


def test_certs_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site_path, _ = write_site(tmp_path, 1)
    monkeypatch.setenv("EMS_OPCUA_PASSWORD", "short")
    assert main(["certs", "--site", str(site_path), "--out", str(tmp_path / "pki")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: EMS_OPCUA_PASSWORD: password must have at least 12 characters"
    assert not (tmp_path / "pki").exists()  # nothing written
    monkeypatch.delenv("EMS_OPCUA_PASSWORD")
    assert main(["certs", "--site", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bench_push_small_run(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--edges", "3", "--workers", "2", "--rounds", "5", "--telemetry-s", "1", "--idle-s", "0.5"]
    code = main(["bench", "push", *arguments, "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["edges"] == 3 and result["workers"] == 2
    assert result["rounds"] == 5 and result["push_failures"] == 0
    assert result["mode"] == "SignAndEncrypt"
    assert result["push_ms"]["p50"] > 0.0
    assert result["telemetry_samples"] > 0 and result["telemetry_lost"] == 0
    assert result["telemetry_ms"]["p99"] >= result["telemetry_ms"]["p50"] > 0.0
    central = result["central"]
    assert central["telemetry_updates"] >= result["telemetry_samples"]
    assert (
        central["cpu_ms_per_telemetry_update"] is not None and central["cpu_ms_per_telemetry_update"] >= 0.0
    )
    assert central["rss_connected_mb"] > 0.0 and central["push_cpu_ms_per_edge"] > 0.0
    assert central["connect_cpu_ms_per_edge"] > 0.0


def test_bench_push_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "push", "--edges", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --edges: must be 1..1000, got 0"
    assert main(["bench", "push", "--edges", "1001"]) == 2
    assert main(["bench", "push", "--workers", "-1"]) == 2
    assert "error: --workers: must be 0..64" in capsys.readouterr().err
    assert main(["bench", "push", "--policy", "None"]) == 2
    assert "unknown policy 'None'" in capsys.readouterr().err
