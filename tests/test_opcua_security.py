"""OPC UA security building blocks without a network: passwords, users file, PKI, trust lists, roles,
the telemetry mapping and the WriteSchedule argument decoding."""

from __future__ import annotations

import math
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.opcua.access import EdgeUser, EdgeUserManager, RoleRuleset
from edge.opcua.methods import ArgumentError, decode_write_schedule
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.opcua.common import (
    OPCUA_NULL_DATETIME,
    central_application_uri,
    edge_application_uri,
    telemetry_from_values,
    telemetry_values,
)
from shared.opcua.pki import (
    CENTRAL_NODE,
    PkiError,
    PkiLayout,
    certificate_uris,
    create_identity,
    edge_node,
    load_identity,
    pki_layout,
    write_identity,
)
from shared.opcua.provision import ensure_site_pki
from shared.opcua.trust import RESCAN_S, PeerRole, RefusalKind, TrustList, peer_problem
from shared.opcua.ua_security import CertificateGate, first_der_certificate
from shared.opcua.ua_types import ObjectIds, numeric_node_id
from shared.opcua.users import (
    Role,
    UserEntry,
    Users,
    UsersFileError,
    hash_password,
    parse_users,
    render_users,
    verify_password,
    write_users,
)
from shared.site import SiteConfig
from tests.support import write_site

NOW = datetime.now(UTC)
FAST = {"n": 2**10, "r": 1, "p": 1}  # cheap scrypt for tests that hash many times


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteConfig, Path]:
    directory = tmp_path_factory.mktemp("pki-unit")
    _, site = write_site(directory, 2)
    ensure_site_pki(site, pki_layout(site, directory / "pki"), central_hosts=["localhost"])
    return site, directory / "pki"


# --- passwords and the users file ---------------------------------------------------------------


def test_password_hash_is_salted_and_verifies() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second  # salted
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("pbkdf2$1$2$3$AAAA$BBBB", "scrypt$N$r$p$salt$hash"),
        ("scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "power of two"),
        ("scrypt$2147483648$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "power of two"),
        ("scrypt$16384$8$1$***$" + "A" * 44, "malformed"),
        ("scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA", "32 bytes"),
    ],
)
def test_malformed_hash_is_refused(encoded: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("$", r"\$")):
        verify_password("whatever", encoded)


def test_users_file_round_trip_and_authenticate() -> None:
    users = Users(
        (
            UserEntry("central", Role.OPERATOR, hash_password("operator password", **FAST)),
            UserEntry("ui", Role.VIEWER, hash_password("viewer password!", **FAST)),
        )
    )
    parsed = parse_users(render_users(users))
    assert parsed == users
    entry = parsed.authenticate("ui", "viewer password!")
    assert entry is not None and entry.role is Role.VIEWER
    assert parsed.authenticate("ui", "operator password") is None
    assert parsed.authenticate("nobody", "viewer password!") is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[users]]\nname = "a"\nrole = "admin"\npassword_hash = "x"\n', "users[0].role"),
        ('[[users]]\nname = "a b"\nrole = "viewer"\npassword_hash = "x"\n', "users[0].name"),
        ('[[users]]\nname = "a"\nrole = "viewer"\npassword_hash = "x"\n', "users[0].password_hash"),
        ('[[users]]\nname = "a"\nrole = "viewer"\npassword = "plain"\n', "users[0]"),
        ("[[users]\n", "not valid TOML"),
    ],
)
def test_bad_users_file_names_the_entry(text: str, where: str) -> None:
    with pytest.raises(UsersFileError) as info:
        parse_users(text, "users.toml")
    assert where in str(info.value)
    assert str(info.value).startswith("users.toml")


def test_duplicate_user_is_refused() -> None:
    entry = UserEntry("a", Role.VIEWER, hash_password("some password", **FAST))
    text = render_users(Users((entry,))) + render_users(Users((entry,)))
    with pytest.raises(UsersFileError, match="duplicate user 'a'"):
        parse_users(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_users_parser_never_crashes(text: str) -> None:
    try:
        parse_users(text)
    except UsersFileError as exc:
        assert exc.lines()


def test_users_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    write_users(path, Users((UserEntry("a", Role.VIEWER, hash_password("some password", **FAST)),)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the edge's user manager and roles -----------------------------------------------------------


def test_user_manager_checks_passwords_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    write_users(
        path, Users((UserEntry("central", Role.OPERATOR, hash_password("operator password", **FAST)),))
    )
    manager = EdgeUserManager(path, gate=None)
    user = manager.get_user(None, "central", "operator password")
    assert isinstance(user, EdgeUser) and user.ems_role is Role.OPERATOR
    assert manager.get_user(None, "central", "operator password")  # remembered: same answer
    assert manager.get_user(None, "central", "wrong password") is None
    assert manager.get_user(None, None, None) is None  # anonymous
    assert manager.get_user(None, "central", None) is None
    # The file changes: the old password no longer works, the new user does.
    write_users(path, Users((UserEntry("ui", Role.VIEWER, hash_password("viewer password!", **FAST)),)))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    assert manager.get_user(None, "central", "operator password") is None
    viewer = manager.get_user(None, "ui", "viewer password!")
    assert isinstance(viewer, EdgeUser) and viewer.ems_role is Role.VIEWER
    # A broken file admits nobody (fail closed) until it is fixed.
    path.write_text("[[users]\n", encoding="utf-8")
    assert manager.get_user(None, "ui", "viewer password!") is None


def test_user_manager_refuses_untrusted_channel_certificate(
    pki: tuple[SiteConfig, Path], tmp_path: Path
) -> None:
    site, pki_dir = pki
    layout = pki_layout(site, pki_dir)
    path = tmp_path / "users.toml"
    write_users(
        path, Users((UserEntry("central", Role.OPERATOR, hash_password("operator password", **FAST)),))
    )
    manager = EdgeUserManager(path, CertificateGate(TrustList(layout.trusted_clients_dir), PeerRole.CLIENT))
    central = layout.cert_path(CENTRAL_NODE).read_bytes()
    edge = layout.cert_path(edge_node("cab-1")).read_bytes()  # real, but not a trusted client
    assert manager.get_user(None, "central", "operator password", central) is not None
    assert manager.get_user(None, "central", "operator password", edge) is None
    assert manager.get_user(None, "central", "operator password", None) is None


def test_roles() -> None:
    ruleset = RoleRuleset()
    call = numeric_node_id(ObjectIds.CallRequest_Encoding_DefaultBinary)
    read = numeric_node_id(ObjectIds.ReadRequest_Encoding_DefaultBinary)
    write = numeric_node_id(ObjectIds.WriteRequest_Encoding_DefaultBinary)
    add_nodes = numeric_node_id(ObjectIds.AddNodesRequest_Encoding_DefaultBinary)
    operator = EdgeUser(name="op", ems_role=Role.OPERATOR)
    viewer = EdgeUser(name="ui", ems_role=Role.VIEWER)
    assert ruleset.check_validity(operator, call, None)
    assert ruleset.check_validity(operator, read, None)
    assert not ruleset.check_validity(viewer, call, None)
    assert ruleset.check_validity(viewer, read, None)
    for user in (operator, viewer):
        assert not ruleset.check_validity(user, write, None)
        assert not ruleset.check_validity(user, add_nodes, None)
    assert not ruleset.check_validity(None, read, None)


# --- PKI ----------------------------------------------------------------------------------------


def test_ensure_site_pki_creates_then_keeps(pki: tuple[SiteConfig, Path]) -> None:
    site, pki_dir = pki
    layout = pki_layout(site, pki_dir)
    for node, uri in [
        (CENTRAL_NODE, central_application_uri("test-site")),
        (edge_node("cab-1"), edge_application_uri("test-site", "cab-1")),
        (edge_node("cab-2"), edge_application_uri("test-site", "cab-2")),
    ]:
        identity = load_identity(layout, node, uri, NOW)
        assert certificate_uris(identity.certificate) == [uri]
        assert stat.S_IMODE(layout.key_path(node).stat().st_mode) == 0o600
        assert layout.trusted_copy(node).read_bytes() == identity.certificate_der
    assert sorted(p.name for p in layout.trusted_clients_dir.iterdir()) == ["central.cert.der"]
    before = layout.cert_path(CENTRAL_NODE).read_bytes()
    report = ensure_site_pki(site, layout, central_hosts=["localhost"])
    assert not report.created and len(report.kept) == 4  # central, two edges, the HTTP API's certificate
    assert layout.cert_path(CENTRAL_NODE).read_bytes() == before


def test_load_identity_refuses_wrong_or_missing(pki: tuple[SiteConfig, Path], tmp_path: Path) -> None:
    site, pki_dir = pki
    layout = pki_layout(site, pki_dir)
    with pytest.raises(PkiError, match=r"not urn:hybrid-ems:test-site:edge:cab-2"):
        load_identity(layout, edge_node("cab-1"), edge_application_uri("test-site", "cab-2"), NOW)
    with pytest.raises(PkiError, match=r"missing .*ems certs"):
        load_identity(layout, edge_node("cab-9"), edge_application_uri("test-site", "cab-9"), NOW)
    with pytest.raises(PkiError, match="expired"):
        load_identity(layout, CENTRAL_NODE, central_application_uri("test-site"), NOW + timedelta(days=3650))
    # A key that does not belong to the certificate.
    other = pki_layout(site, tmp_path)
    other.own_dir.mkdir(parents=True)
    (other.cert_path(CENTRAL_NODE)).write_bytes(layout.cert_path(CENTRAL_NODE).read_bytes())
    (other.key_path(CENTRAL_NODE)).write_bytes(layout.key_path(edge_node("cab-1")).read_bytes())
    with pytest.raises(PkiError, match="does not belong"):
        load_identity(other, CENTRAL_NODE, central_application_uri("test-site"), NOW)


def test_trust_list_checks_and_follows_the_directory(pki: tuple[SiteConfig, Path], tmp_path: Path) -> None:
    site, pki_dir = pki
    layout = pki_layout(site, pki_dir)
    central = load_identity(layout, CENTRAL_NODE, central_application_uri("test-site"), NOW).certificate
    edge = load_identity(
        layout, edge_node("cab-1"), edge_application_uri("test-site", "cab-1"), NOW
    ).certificate
    directory = tmp_path / "trusted"
    directory.mkdir()
    trust = TrustList(directory)
    refusal = peer_problem(central, trust, PeerRole.CLIENT, NOW)
    assert refusal is not None and refusal.kind is RefusalKind.UNTRUSTED  # empty list trusts nobody
    (directory / "central.der").write_bytes(layout.cert_path(CENTRAL_NODE).read_bytes())
    (directory / "edge.pem").write_bytes(b"not a certificate")  # ignored, not fatal
    assert peer_problem(central, trust, PeerRole.CLIENT, NOW) is None
    uri_refusal = peer_problem(central, trust, PeerRole.CLIENT, NOW, claimed_uri="urn:someone-else")
    assert uri_refusal is not None and uri_refusal.kind is RefusalKind.URI
    usage_refusal = peer_problem(central, trust, PeerRole.SERVER, NOW)  # a client-only certificate
    assert usage_refusal is not None and usage_refusal.kind is RefusalKind.USAGE
    late = peer_problem(central, trust, PeerRole.CLIENT, NOW + timedelta(days=3650))
    assert late is not None and late.kind is RefusalKind.TIME
    assert peer_problem(edge, trust, PeerRole.CLIENT, NOW) is not None
    (directory / "central.der").unlink()  # revoked without a restart
    assert peer_problem(central, trust, PeerRole.CLIENT, NOW) is not None


def test_find_by_uri_pins_the_newest_valid_certificate(tmp_path: Path) -> None:
    uri = edge_application_uri("s", "cab-1")
    layout = PkiLayout(tmp_path)
    old_key, old = create_identity("old", uri, ["127.0.0.1"], server=True, now=NOW - timedelta(days=10))
    new_key, new = create_identity("new", uri, ["127.0.0.1"], server=True, now=NOW)
    write_identity(layout, "old", old_key, old)
    write_identity(layout, "new", new_key, new)
    trust = TrustList(layout.own_dir)
    assert trust.find_by_uri(uri, NOW) == new
    assert trust.find_by_uri(edge_application_uri("s", "cab-2"), NOW) is None


def test_trust_list_notices_a_certificate_rewritten_in_place_within_the_rescan_period(tmp_path: Path) -> None:
    uri = edge_application_uri("s", "cab-1")
    layout = PkiLayout(tmp_path / "own")
    first_key, first = create_identity("first", uri, ["127.0.0.1"], server=True, now=NOW)
    second_key, second = create_identity("second", uri, ["127.0.0.1"], server=True, now=NOW)
    write_identity(layout, "first", first_key, first)
    directory = tmp_path / "trusted"
    directory.mkdir()
    pinned = directory / "edge.der"
    pinned.write_bytes(layout.cert_path("first").read_bytes())
    trust = TrustList(directory)
    assert trust.find_by_uri(uri, NOW) == first
    write_identity(layout, "second", second_key, second)
    with pinned.open("r+b") as file:  # same name, same directory entry: only the contents change
        file.truncate(0)
        file.write(layout.cert_path("second").read_bytes())
    deadline = time.monotonic() + RESCAN_S + 5.0
    while trust.find_by_uri(uri, NOW) != second:
        assert time.monotonic() < deadline, "the rewritten certificate was not noticed"
        time.sleep(0.05)
    assert trust.is_trusted(second, NOW) and not trust.is_trusted(first, NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_first_der_certificate_never_crashes(data: bytes) -> None:
    try:
        first = first_der_certificate(data)
    except ValueError:
        return
    assert data.startswith(first)


def test_first_der_certificate_splits_a_chain(pki: tuple[SiteConfig, Path]) -> None:
    site, pki_dir = pki
    layout = pki_layout(site, pki_dir)
    central = layout.cert_path(CENTRAL_NODE).read_bytes()
    edge = layout.cert_path(edge_node("cab-1")).read_bytes()
    assert first_der_certificate(central + edge) == central


# --- the address space mapping and method arguments -----------------------------------------------


def _telemetry(**changes: object) -> EdgeTelemetry:
    base = EdgeTelemetry(
        cabinet_id="cab-1",
        soc_pct=55.5,
        active_power_kw=-20.0,
        setpoint_kw=-20.0,
        charge_limit_kw=100.0,
        discharge_limit_kw=90.0,
        mode=EdgeMode.SCHEDULE,
        schedule_id="p/cab-1",
        schedule_valid_until=datetime(2026, 11, 25, tzinfo=UTC),
        interlock_active=False,
        interlock_reason="",
        cycle_time_p99_ms=3.5,
    )
    return EdgeTelemetry(**{**base.__dict__, **changes})


def test_telemetry_round_trip() -> None:
    for telemetry in (_telemetry(), _telemetry(schedule_valid_until=None, mode=EdgeMode.FALLBACK)):
        values = telemetry_values(telemetry)
        assert telemetry_from_values(values, "cab-1") == telemetry
    assert (
        telemetry_values(_telemetry(schedule_valid_until=None))["ScheduleValidUntil"] == OPCUA_NULL_DATETIME
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CabinetId": "cab-2"}, "expected 'cab-1'"),
        ({"Mode": "dancing"}, "Mode = 'dancing'"),
        ({"SocPct": math.nan}, "SocPct"),
        ({"SocPct": "55"}, "SocPct"),
        ({"InterlockActive": 1}, "InterlockActive"),
    ],
)
def test_implausible_telemetry_is_refused(change: dict[str, object], message: str) -> None:
    values = {**telemetry_values(_telemetry()), **change}
    with pytest.raises(ValueError, match=message):
        telemetry_from_values(values, "cab-1")


def test_missing_variable_is_refused() -> None:
    values = telemetry_values(_telemetry())
    del values["Mode"]
    with pytest.raises(ValueError, match="missing variables: Mode"):
        telemetry_from_values(values, "cab-1")


def _args(**changes: ua.Variant) -> list[ua.Variant]:
    arguments = {
        "id": ua.Variant("p/cab-1", ua.VariantType.String),
        "start": ua.Variant(NOW, ua.VariantType.DateTime),
        "interval": ua.Variant(900, ua.VariantType.UInt32),
        "setpoints": ua.Variant([1.0, -2.0], ua.VariantType.Double),
    }
    arguments.update(changes)
    return list(arguments.values())


def test_decode_write_schedule() -> None:
    schedule = decode_write_schedule(_args())
    assert (schedule.schedule_id, schedule.start, schedule.interval_s) == ("p/cab-1", NOW, 900)
    assert schedule.setpoints_kw == (1.0, -2.0)
    assert decode_write_schedule(_args(setpoints=ua.Variant([], ua.VariantType.Double))).setpoints_kw == ()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (_args()[:3], "takes 4 arguments, got 3"),
        (
            _args(interval=ua.Variant(900.0, ua.VariantType.Double)),
            "IntervalSeconds must be a UInt32, got Double",
        ),
        (_args(id=ua.Variant(7, ua.VariantType.Int32)), "ScheduleId must be a String"),
        (_args(id=ua.Variant("x" * 300, ua.VariantType.String)), "at most 256"),
        (_args(start=ua.Variant("2026-11-24T00:00:00Z", ua.VariantType.String)), "Start must be a DateTime"),
        (_args(setpoints=ua.Variant(1.0, ua.VariantType.Double)), "SetpointsKw must be a Double array"),
        (_args(setpoints=ua.Variant([1, 2], ua.VariantType.Int32)), "SetpointsKw must be a Double array"),
    ],
)
def test_bad_write_schedule_arguments(arguments: list[ua.Variant], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        decode_write_schedule(arguments)
