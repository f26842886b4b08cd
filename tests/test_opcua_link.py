"""The OPC UA link end to end: real edge servers and real central sessions over loopback, SignAndEncrypt."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError

from central.edge_link import EdgeFleet, PushStatus
from edge.opcua import EdgeOpcUaServer
from edge.opcua.aspace_cache import AddressSpaceCache, shelf_base
from lab.loopback import opcua_node_cache_dir
from lab.memory_edge import InMemoryEdgeControl
from shared.clock import RealClock
from shared.edge_api import Decision, EdgeMode, EdgeTelemetry
from shared.errors import ConfigError
from shared.opcua.common import NAMESPACE_URI, VARIABLE_NAMES, central_application_uri
from shared.opcua.pki import (
    CENTRAL_NODE,
    PkiError,
    create_identity,
    edge_node,
    pki_layout,
    write_identity,
)
from shared.opcua.provision import ensure_site_pki
from shared.opcua.users import Role, UserEntry, Users, hash_password, write_users
from shared.plan import Plan
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig, parse_site
from tests.support import site_toml, write_site

OPERATOR_PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-1"
ROGUE = "rogue"  # a client identity that claims the central's URI but is not in the trust list
FAST_LINK = "[opcua]\nreconnect_min_s = 0.2\nreconnect_max_s = 0.5\npush_retry_s = 1.0\n"


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and certificates for 'test-site' with cab-1..cab-3, made once (RSA generation is slow)."""
    directory = tmp_path_factory.mktemp("opcua-link")
    _, site = write_site(directory, 3)
    layout = pki_layout(site, directory / "pki")
    ensure_site_pki(site, layout, central_hosts=["localhost"])
    users = Users(
        (
            UserEntry("central", Role.OPERATOR, hash_password(OPERATOR_PASSWORD)),
            UserEntry("ui", Role.VIEWER, hash_password(VIEWER_PASSWORD)),
        )
    )
    write_users(layout.default_users_file, users)
    key, certificate = create_identity(
        "rogue", central_application_uri("test-site"), ["localhost"], server=False, now=datetime.now(UTC)
    )
    write_identity(layout, ROGUE, key, certificate)
    return layout.root


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return write_site(tmp_path, 3, extra=FAST_LINK)[1]


class CountingControl(InMemoryEdgeControl):
    """The in-memory controller, counting submissions and able to fail its telemetry."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.submissions = 0
        self.broken = False

    def submit_schedule(self, schedule: CabinetSchedule) -> Decision:
        self.submissions += 1
        return super().submit_schedule(schedule)

    def telemetry(self) -> EdgeTelemetry:
        if self.broken:
            raise RuntimeError("BMS data unavailable")
        return super().telemetry()


class Edges:
    """Edge servers of a site, started and stopped one by one."""

    def __init__(self, site: SiteConfig, pki_dir: Path) -> None:
        self.site = site
        self.pki_dir = pki_dir
        self.clock = RealClock()
        self.controls = {c.id: CountingControl(c, self.clock) for c in site.cabinets}
        self.servers: dict[str, EdgeOpcUaServer] = {}

    async def start(self, cabinet_id: str, control: CountingControl | None = None) -> None:
        if control is not None:
            self.controls[cabinet_id] = control
        server = EdgeOpcUaServer(
            self.site, cabinet_id, self.controls[cabinet_id], self.clock, self.pki_dir, opcua_node_cache_dir()
        )
        await server.start()
        self.servers[cabinet_id] = server

    async def stop(self, cabinet_id: str) -> None:
        await self.servers.pop(cabinet_id).stop()

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(cabinet_id) for cabinet_id in list(self.servers)))


@asynccontextmanager
async def edges(site: SiteConfig, pki_dir: Path, *cabinet_ids: str) -> AsyncIterator[Edges]:
    running = Edges(site, pki_dir)
    try:
        for cabinet_id in cabinet_ids:
            await running.start(cabinet_id)
        yield running
    finally:
        await running.stop_all()


def fleet(site: SiteConfig, pki_dir: Path, **kwargs: object) -> EdgeFleet:
    return EdgeFleet(site, RealClock(), "central", OPERATOR_PASSWORD, pki_dir, **kwargs)  # type: ignore[arg-type]


def make_plan(site: SiteConfig, plan_id: str, setpoint_kw: float = 10.0, steps: int = 4) -> Plan:
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    cabinets = {
        c.id: {"setpoint_kw": [setpoint_kw] + [-5.0] * (steps - 1), "soc_pct": [50.0] * steps}
        for c in site.cabinets
    }
    return Plan.model_validate(
        {
            "plan_id": plan_id,
            "created_at": start,
            "start": start,
            "interval_minutes": 15,
            "status": "optimal",
            "objective": {},
            "grid_kw": [0.0] * steps,
            "pv_used_kw": [0.0] * steps,
            "cabinets": cabinets,
            "solver": {"backend": "test"},
        }
    )


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def connect(
    site: SiteConfig,
    pki_dir: Path,
    *,
    user: str | None = "central",
    password: str | None = OPERATOR_PASSWORD,
    node: str = CENTRAL_NODE,
    secure: bool = True,
    claim_central: bool = False,
) -> Client:
    """A raw asyncua client session to cab-1, as a third-party client would open it."""
    layout = pki_layout(site, pki_dir)
    client = Client(site.cabinet("cab-1").opcua_endpoint, timeout=3)
    client.application_uri = central_application_uri("test-site")
    if user is not None:
        client.set_user(user)
    if password is not None:
        client.set_password(password)
    if secure:
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(layout.cert_path(node)),
            str(layout.key_path(node)),
            server_certificate=str(layout.cert_path(edge_node("cab-1"))),
        )
    if claim_central:
        # Open the channel with our own (untrusted) key but claim the trusted central's certificate in
        # CreateSession, which is all asyncua's certificate validator sees.
        original = client.uaclient.create_session
        central_der = layout.cert_path(CENTRAL_NODE).read_bytes()

        async def claiming(params: ua.CreateSessionParameters) -> ua.CreateSessionResult:
            params.ClientCertificate = central_der
            return await original(params)

        client.uaclient.create_session = claiming  # type: ignore[method-assign]
    await client.connect()
    return client


async def cabinet_node(client: Client) -> object:
    namespace = await client.get_namespace_index(NAMESPACE_URI)
    return await client.nodes.objects.get_child(f"{namespace}:Cabinet"), namespace


async def call(client: Client, method: str, *arguments: ua.Variant) -> list[object]:
    cabinet, namespace = await cabinet_node(client)
    result: list[object] = await cabinet.call_method(f"{namespace}:{method}", *arguments)  # type: ignore[attr-defined]
    return result


def schedule_args(
    start: datetime, interval_s: int, setpoints: list[float], schedule_id: str
) -> list[ua.Variant]:
    return [
        ua.Variant(schedule_id, ua.VariantType.String),
        ua.Variant(start, ua.VariantType.DateTime),
        ua.Variant(interval_s, ua.VariantType.UInt32),
        ua.Variant(setpoints, ua.VariantType.Double),
    ]


def _with_interval(arguments: list[ua.Variant], interval: ua.Variant) -> list[ua.Variant]:
    return [arguments[0], arguments[1], interval, arguments[3]]


# --- the tests ----------------------------------------------------------------------------------


async def test_push_and_read_back(site: SiteConfig, pki_dir: Path) -> None:
    seen: list[tuple[str, float]] = []
    async with (
        edges(site, pki_dir, "cab-1", "cab-2") as running,
        fleet(site, pki_dir, on_telemetry=lambda c, t: seen.append((c, t.soc_pct))) as central,
    ):
        assert await central.wait_connected(10.0, ["cab-1", "cab-2"])
        plan = make_plan(site, "plan-1")
        outcomes = await central.push_plan(plan)
        for cabinet_id in ("cab-1", "cab-2"):
            assert outcomes[cabinet_id].status is PushStatus.ACCEPTED, outcomes[cabinet_id]
            assert outcomes[cabinet_id].status == "accepted"
            assert outcomes[cabinet_id].duration_ms > 0.0
            assert running.controls[cabinet_id].active_schedule == plan.schedule_for(cabinet_id)
        assert outcomes["cab-3"].status is PushStatus.UNREACHABLE

        def runs_plan() -> bool:
            t = central.telemetry()["cab-1"]
            return t is not None and t.schedule_id == "plan-1/cab-1" and t.mode is EdgeMode.SCHEDULE

        await eventually(runs_plan)
        telemetry = central.telemetry()["cab-1"]
        assert telemetry is not None and telemetry.setpoint_kw == 10.0
        assert telemetry.schedule_valid_until == plan.end
        running.controls["cab-1"].set_soc_pct(61.5)
        await eventually(lambda: ("cab-1", 61.5) in seen)
        assert central.telemetry()["cab-1"].soc_pct == 61.5  # type: ignore[union-attr]
        assert central.connected() == {"cab-1": True, "cab-2": True, "cab-3": False}

        # The address space as a third-party viewer sees it (docs/interfaces.md: edge OPC UA server).
        viewer = await connect(site, pki_dir, user="ui", password=VIEWER_PASSWORD)
        try:
            cabinet, _ = await cabinet_node(viewer)
            children = {
                (await child.read_browse_name()).Name: child
                for child in await cabinet.get_children()  # type: ignore[attr-defined]
            }
            assert set(children) == {*VARIABLE_NAMES, "WriteSchedule", "ResetInterlock"}
            types = {name: await children[name].read_data_type_as_variant_type() for name in VARIABLE_NAMES}
            assert types["SocPct"] == ua.VariantType.Double
            assert types["ScheduleValidUntil"] == ua.VariantType.DateTime
            assert types["InterlockActive"] == ua.VariantType.Boolean
            assert types["Mode"] == types["CabinetId"] == ua.VariantType.String
            assert await children["ScheduleId"].read_value() == "plan-1/cab-1"
            assert await children["Mode"].read_value() == "schedule"
            endpoints = await viewer.get_endpoints()
            assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.SignAndEncrypt}
            assert {e.SecurityPolicyUri.rsplit("#", 1)[1] for e in endpoints} == {
                "Basic256Sha256",
                "Aes128_Sha256_RsaOaep",
                "Aes256_Sha256_RsaPss",
            }
            tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
            assert tokens == {ua.UserTokenType.UserName}
        finally:
            await viewer.disconnect()


async def test_refused_schedule_leaves_the_previous_one_active(site: SiteConfig, pki_dir: Path) -> None:
    async with edges(site, pki_dir, "cab-1") as running, fleet(site, pki_dir) as central:
        assert await central.wait_connected(10.0, ["cab-1"])
        good = make_plan(site, "good")
        assert (await central.push_plan(good))["cab-1"].status is PushStatus.ACCEPTED
        refused = (await central.push_plan(make_plan(site, "too-big", setpoint_kw=1000.0)))["cab-1"]
        assert refused.status is PushStatus.REFUSED
        assert "exceeds the discharge limit 100 kW" in refused.message
        assert central.last_outcomes()["cab-1"] == refused
        control = running.controls["cab-1"]
        assert control.active_schedule == good.schedule_for("cab-1")

        operator = await connect(site, pki_dir)
        try:
            now = datetime.now(UTC)
            cases = [
                (schedule_args(now, 900, [1.0, math.nan], "nan"), "finite"),
                (schedule_args(now, 900, [], "empty"), "empty"),
                (schedule_args(now - timedelta(days=1), 900, [1.0, 2.0], "past"), "before now"),
                (schedule_args(now, 900, [-150.0], "charge"), "exceeds the charge limit"),
                (schedule_args(now, 900, [1.0], "")[:3], "takes 4 arguments"),
                (
                    _with_interval(
                        schedule_args(now, 900, [1.0], "x"), ua.Variant(900, ua.VariantType.Int64)
                    ),
                    "UInt32",
                ),
            ]
            for arguments, reason in cases:
                accepted, message = await call(operator, "WriteSchedule", *arguments)
                assert accepted is False and reason in str(message), (reason, message)
                assert control.active_schedule == good.schedule_for("cab-1")
            # ResetInterlock: refused while the condition is present, accepted once it is gone.
            control.trip("cell overvoltage")
            await eventually(
                lambda: (
                    central.telemetry()["cab-1"] is not None and central.telemetry()["cab-1"].interlock_active
                )
            )  # type: ignore[union-attr]
            accepted, message = await call(operator, "ResetInterlock")
            assert accepted is False and "still present" in str(message)
            control.clear_condition()
            assert (await central.reset_interlock("cab-1")) == Decision(True, "interlock reset")
        finally:
            await operator.disconnect()
        await eventually(lambda: central.telemetry()["cab-1"].interlock_active is False)  # type: ignore[union-attr]
        assert central.telemetry()["cab-1"].schedule_id == "good/cab-1"  # type: ignore[union-attr]


async def _refused(site: SiteConfig, pki_dir: Path, **kwargs: object) -> str:
    started = time.monotonic()
    with pytest.raises((UaError, OSError, TimeoutError)) as info:
        client = await connect(site, pki_dir, **kwargs)  # type: ignore[arg-type]
        await client.disconnect()
    assert time.monotonic() - started < 3.0  # refused, not timed out
    return type(info.value).__name__


async def test_access_is_denied(site: SiteConfig, pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with edges(site, pki_dir, "cab-1") as running:
        assert await _refused(site, pki_dir, user=None, password=None) == "BadIdentityTokenRejected"
        assert await _refused(site, pki_dir, password="wrong-password") == "BadUserAccessDenied"
        assert await _refused(site, pki_dir, user="nobody") == "BadUserAccessDenied"
        assert await _refused(site, pki_dir, node=ROGUE) == "BadCertificateUntrusted"
        # A stolen (public) certificate does not help without its key: the channel's certificate counts.
        assert await _refused(site, pki_dir, node=ROGUE, claim_central=True) == "BadUserAccessDenied"
        # No security: the edge offers no such endpoint, and a client that tries anyway gets no session.
        assert await _refused(site, pki_dir, secure=False) == "UaError"  # "No matching endpoints"
        with monkeypatch.context() as patch:
            patch.setattr(Client, "find_endpoint", staticmethod(lambda endpoints, mode, uri: endpoints[0]))
            assert await _refused(site, pki_dir, secure=False) == "BadUserAccessDenied"

        viewer = await connect(site, pki_dir, user="ui", password=VIEWER_PASSWORD)
        try:
            cabinet, namespace = await cabinet_node(viewer)
            soc = await cabinet.get_child(f"{namespace}:SocPct")  # type: ignore[attr-defined]
            assert await soc.read_value() == 50.0
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await call(viewer, "WriteSchedule", *schedule_args(datetime.now(UTC), 900, [1.0], "v"))
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await call(viewer, "ResetInterlock")
            with pytest.raises(ua.uaerrors.UaStatusCodeError):
                await soc.write_value(ua.Variant(99.0, ua.VariantType.Double))
        finally:
            await viewer.disconnect()
        assert running.controls["cab-1"].submissions == 0
        operator = await connect(site, pki_dir)
        try:
            assert await call(operator, "ResetInterlock") == [True, "no interlock was active"]
        finally:
            await operator.disconnect()
        # The central logged in with a viewer account: its pushes are refused, with the reason.
        async with EdgeFleet(site, RealClock(), "ui", VIEWER_PASSWORD, pki_dir) as central:
            assert await central.wait_connected(10.0, ["cab-1"])
            outcome = (await central.push_plan(make_plan(site, "p")))["cab-1"]
            assert outcome.status is PushStatus.REFUSED and "BadUserAccessDenied" in outcome.message
        assert running.controls["cab-1"].submissions == 0


async def test_down_edge_is_unreachable_then_gets_the_plan_when_back(site: SiteConfig, pki_dir: Path) -> None:
    async with edges(site, pki_dir, "cab-1", "cab-2") as running, fleet(site, pki_dir) as central:
        assert await central.wait_connected(10.0, ["cab-1", "cab-2"])
        plan = make_plan(site, "plan-a")
        outcomes = await central.push_plan(plan)
        assert [outcomes[c].status for c in ("cab-1", "cab-2")] == [PushStatus.ACCEPTED] * 2
        assert outcomes["cab-3"].status is PushStatus.UNREACHABLE
        assert outcomes["cab-3"].message.startswith("not connected")

        await running.start("cab-3")  # comes up: the central connects and pushes the plan it missed
        await eventually(
            lambda: running.controls["cab-3"].active_schedule == plan.schedule_for("cab-3"), 10.0
        )
        await eventually(lambda: central.last_outcomes()["cab-3"].status is PushStatus.ACCEPTED)

        # cab-1 restarts with its state lost: it is pushed again once reconnected.
        await running.stop("cab-1")
        await eventually(lambda: not central.connected()["cab-1"])
        assert central.telemetry()["cab-1"] is None
        fresh = CountingControl(site.cabinet("cab-1"), running.clock)
        await running.start("cab-1", fresh)
        await eventually(lambda: fresh.active_schedule == plan.schedule_for("cab-1"), 10.0)

        # cab-2 restarts and still runs the plan: it is not pushed again.
        before = running.controls["cab-2"].submissions
        await running.stop("cab-2")
        await eventually(lambda: not central.connected()["cab-2"])
        await running.start("cab-2")
        assert await central.wait_connected(10.0)
        await asyncio.sleep(1.2)  # longer than push_retry_s
        assert running.controls["cab-2"].submissions == before
        await eventually(lambda: central.telemetry()["cab-2"] is not None)


async def test_unusable_telemetry_is_not_passed_on(site: SiteConfig, pki_dir: Path) -> None:
    async with edges(site, pki_dir) as running, fleet(site, pki_dir) as central:
        control = running.controls["cab-1"]
        control.broken = True  # broken from the start: the server still comes up, its variables Bad
        await running.start("cab-1")
        assert await central.wait_connected(10.0, ["cab-1"])
        await asyncio.sleep(0.3)
        assert central.telemetry()["cab-1"] is None
        control.broken = False
        await eventually(lambda: central.telemetry()["cab-1"] is not None)
        control.broken = True
        await eventually(lambda: central.telemetry()["cab-1"] is None)
        assert central.connected()["cab-1"]
        # Pushing still works: the edge's schedule API does not depend on its telemetry.
        assert (await central.push_plan(make_plan(site, "p")))["cab-1"].status is PushStatus.ACCEPTED


async def test_insecure_mode_works_and_warns(
    tmp_path: Path, pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users_file = pki_layout(parse_site(site_toml(1)), pki_dir).default_users_file
    text = site_toml(1, extra=f'[opcua]\ninsecure = true\nusers_file = "{users_file}"\n')
    site = parse_site(text)
    empty = tmp_path / "no-pki"  # insecure mode needs no keys or certificates
    caplog.set_level(logging.WARNING)
    async with edges(site, empty, "cab-1") as running, fleet(site, empty) as central:
        assert any("insecure = true" in r.message and r.levelno == logging.WARNING for r in caplog.records)
        assert await central.wait_connected(10.0)
        outcome = (await central.push_plan(make_plan(site, "plain")))["cab-1"]
        assert outcome.status is PushStatus.ACCEPTED
        assert running.controls["cab-1"].active_schedule is not None


async def test_bad_setup_is_refused_before_anything_starts(
    site: SiteConfig, pki_dir: Path, tmp_path: Path
) -> None:
    clock = RealClock()
    control = InMemoryEdgeControl(site.cabinet("cab-1"), clock)
    with pytest.raises(ConfigError, match="no cabinet 'cab-9'"):
        EdgeOpcUaServer(site, "cab-9", control, clock, pki_dir)
    wrong_path = parse_site(site_toml(1).replace("/ems/edge", "/other"))
    with pytest.raises(ConfigError, match=r"cabinets\[0\].opcua_endpoint.*/ems/edge"):
        EdgeOpcUaServer(wrong_path, "cab-1", control, clock, pki_dir)
    with pytest.raises(PkiError, match="missing"):
        await EdgeOpcUaServer(site, "cab-1", control, clock, tmp_path / "nothing").start()
    with pytest.raises(PkiError, match="missing"):
        EdgeFleet(site, clock, "central", OPERATOR_PASSWORD, tmp_path / "nothing")
    async with fleet(site, pki_dir) as central:
        with pytest.raises(ValueError, match="not in the site: cab-9"):
            plan = make_plan(site, "p")
            await central.push_plan(
                plan.model_copy(update={"cabinets": {**plan.cabinets, "cab-9": plan.cabinets["cab-1"]}})
            )
        with pytest.raises(ValueError, match="failed"):
            await central.push_plan(make_plan(site, "p").model_copy(update={"status": "failed"}))
        assert central.last_outcomes() == {}


async def test_standard_nodes_come_from_the_node_cache_after_the_first_start(
    site: SiteConfig, pki_dir: Path, tmp_path: Path
) -> None:
    """The first start writes the standard address space to the state directory; the next start serves it
    from there, and a third-party client still browses standard nodes and the cabinet."""
    cache = tmp_path / "state"
    control = InMemoryEdgeControl(site.cabinet("cab-1"), RealClock())
    first = EdgeOpcUaServer(site, "cab-1", control, RealClock(), pki_dir, cache)
    await first.start()
    await first.stop()
    marker = shelf_base(cache)
    assert marker.is_file() and not list(cache.glob("*.tmp*"))
    assert AddressSpaceCache(cache).init_path() == marker
    async with EdgeOpcUaServer(site, "cab-1", control, RealClock(), pki_dir, cache):
        client = await connect(site, pki_dir)
        try:
            state = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
            assert state == ua.ServerState.Running
            cabinet, namespace = await cabinet_node(client)
            variable = await cabinet.get_child(f"{namespace}:CabinetId")  # type: ignore[attr-defined]
            cabinet_id = await variable.read_value()
            assert cabinet_id == "cab-1"
        finally:
            await client.disconnect()


async def test_a_failed_connect_closes_its_socket_without_library_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each reconnect attempt to a down edge must not add asyncua teardown warnings to the log, and an
    attempt cut short by the timeout must not leave its socket open."""
    from central.edge_link.session import ClientSecurity, EdgeSession
    from lab.loopback import free_port

    caplog.set_level(logging.DEBUG, logger="asyncua")
    security = ClientSecurity("central", "pw", "urn:test:central", insecure=True)

    async def attempt(endpoint: str) -> BaseException:
        with pytest.raises((OSError, TimeoutError)) as info:
            await EdgeSession.open(
                endpoint, "test-site", "cab-1", security,
                request_timeout_s=0.5, publishing_interval_ms=100.0, on_change=lambda _: None,
            )  # fmt: skip
        return info.value

    refused = await attempt(f"opc.tcp://127.0.0.1:{free_port()}")
    assert isinstance(refused, ConnectionRefusedError), refused

    readers: list[asyncio.StreamReader] = []

    async def accept(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        readers.append(reader)

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)  # accepts, never answers Hello
    try:
        port = silent.sockets[0].getsockname()[1]
        assert isinstance(await attempt(f"opc.tcp://127.0.0.1:{port}"), TimeoutError)
        hello = await asyncio.wait_for(readers[0].read(), 5.0)  # read() returns at EOF: the socket closed
        assert hello.startswith(b"HEL")
    finally:
        silent.close()
        await silent.wait_closed()
    warnings = [r for r in caplog.records if r.name.startswith("asyncua") and r.levelno >= logging.WARNING]
    assert not warnings, [r.getMessage() for r in warnings]
