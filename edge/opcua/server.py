"""The edge's OPC UA server: the ``Cabinet`` address space of docs/interfaces.md: edge OPC UA server, secure
by default.

Security (docs/opcua.md): SignAndEncrypt endpoints only (``[opcua] security_policies``), client certificates
checked against ``trusted/clients`` at CreateSession and again at ActivateSession for the certificate the
secure channel really uses, username/password users with roles from the users file, no anonymous
sessions. ``[opcua] insecure = true`` offers security mode None instead and says so loudly at every start.

Telemetry: a task polls ``control.telemetry()`` every ``telemetry_interval_ms`` (at most that often) and
writes only the variables that changed, with the EMS clock's time as source timestamp. Polling keeps the
server off the control loop's path: the loop never waits for OPC UA. A telemetry snapshot that cannot be
read or is not plausible marks every variable Bad, so no client mistakes stale values for live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from edge.opcua.access import EdgeUserManager, RoleRuleset
from edge.opcua.aspace_cache import AddressSpaceCache
from edge.opcua.methods import (
    RESULT_OUTPUTS,
    WRITE_SCHEDULE_INPUTS,
    call_reset_interlock,
    call_write_schedule,
    result,
)
from shared.clock import Clock
from shared.edge_api import EdgeControl, EdgeMode, EdgeTelemetry
from shared.errors import ConfigError, Problem
from shared.opcua.common import (
    CABINET_OBJECT,
    CABINET_VARIABLES,
    NAMESPACE_URI,
    RESET_INTERLOCK,
    WRITE_SCHEDULE,
    edge_application_uri,
    endpoint_path_problem,
    telemetry_values,
)
from shared.opcua.pki import edge_node, load_identity, pki_layout, users_path
from shared.opcua.trust import PeerRole, TrustList
from shared.opcua.ua_security import SIGN_AND_ENCRYPT, CertificateGate
from shared.opcua.ua_types import StatusCodes, node_id, status, ua_datetime
from shared.site import SiteConfig

_log = logging.getLogger(__name__)

_VARIANT_TYPES = {
    "String": ua.VariantType.String,
    "Double": ua.VariantType.Double,
    "Boolean": ua.VariantType.Boolean,
    "DateTime": ua.VariantType.DateTime,
}
_TYPE_OF = {spec.name: _VARIANT_TYPES[spec.ua_type] for spec in CABINET_VARIABLES}
_GOOD = status(StatusCodes.Good)
_BAD = status(StatusCodes.BadInternalError)
_BAD_RANGE = status(StatusCodes.BadOutOfRange)


class EdgeOpcUaServer:
    """One cabinet's OPC UA server; use as ``async with EdgeOpcUaServer(...) as server``.

    ``pki_dir`` overrides ``[opcua] pki_dir``; ``cache_dir`` (the edge's state directory) keeps the standard
    nodes on disk between starts (:mod:`edge.opcua.aspace_cache`). Raises :class:`shared.errors.InputError`
    subclasses with a one-line reason for a bad endpoint, missing or unusable keys, certificates or users
    file.
    """

    def __init__(
        self,
        site: SiteConfig,
        cabinet_id: str,
        control: EdgeControl,
        clock: Clock,
        pki_dir: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            self._cabinet = site.cabinet(cabinet_id)
        except KeyError as exc:
            raise ConfigError("site", [Problem("cabinets", str(exc.args[0]))]) from None
        index = site.cabinet_ids.index(cabinet_id)
        problem = endpoint_path_problem(self._cabinet.opcua_endpoint)
        if problem is not None:
            raise ConfigError("site", [Problem(f"cabinets[{index}].opcua_endpoint", problem)])
        self._site = site
        self._control = control
        self._clock = clock
        self._pki_dir = pki_dir
        self._node_cache = AddressSpaceCache(cache_dir)
        self._server: Server | None = None
        self._variables: dict[str, Node] = {}
        self._published: dict[str, tuple[object, ua.StatusCode]] = {}
        self._publisher: asyncio.Task[None] | None = None
        self._healthy = True

    @property
    def endpoint(self) -> str:
        return self._cabinet.opcua_endpoint

    @property
    def application_uri(self) -> str:
        return edge_application_uri(self._site.site.name, self._cabinet.id)

    async def __aenter__(self) -> EdgeOpcUaServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        server = await self._configured_server()
        namespace = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space(server, namespace)
        self._server = server
        await self.publish_now()  # the first client already sees the controller's state (or Bad)
        try:
            await server.start()
        except BaseException:
            self._server = None
            raise
        self._publisher = asyncio.create_task(
            self._publish_loop(), name=f"opcua-telemetry-{self._cabinet.id}"
        )
        _log.info(
            "edge %s: OPC UA server on %s (%s)",
            self._cabinet.id,
            self.endpoint,
            "INSECURE" if self._site.opcua.insecure else ", ".join(self._site.opcua.security_policies),
        )

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
            _log.info("edge %s: OPC UA server stopped", self._cabinet.id)

    async def _configured_server(self) -> Server:
        settings = self._site.opcua
        layout = pki_layout(self._site, self._pki_dir)
        gate: CertificateGate | None = None
        identity = None
        if settings.insecure:
            _log.warning(
                "edge %s: [opcua] insecure = true: OPC UA WITHOUT signing or encryption, passwords in clear "
                "text, client certificates NOT checked. Never use this on a real plant.",
                self._cabinet.id,
            )
        else:
            identity = load_identity(
                layout, edge_node(self._cabinet.id), self.application_uri, datetime.now(UTC)
            )
            gate = CertificateGate(TrustList(layout.trusted_clients_dir), PeerRole.CLIENT)
        users = EdgeUserManager(users_path(self._site, layout), gate)
        server = Server(user_manager=users)
        await server.init(self._node_cache.init_path())
        self._node_cache.publish()
        server.set_endpoint(self.endpoint)
        host, port = self._cabinet.opcua_host_port
        server.socket_address = (settings.bind_host or host, port)
        server.set_server_name(f"hybrid-ems edge {self._cabinet.id}")
        server.product_uri = "urn:hybrid-ems"
        server.application_type = ua.ApplicationType.Server
        await server.set_application_uri(self.application_uri)
        server.set_identity_tokens([ua.UserNameIdentityToken])  # no anonymous, no X.509 user tokens
        if identity is None or gate is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=RoleRuleset())
        else:
            await server.load_certificate(identity.certificate_der, format="der")
            await server.load_private_key(identity.private_key_pem, format="pem")
            server.set_security_policy(
                [SIGN_AND_ENCRYPT[name] for name in settings.security_policies],
                permission_ruleset=RoleRuleset(),
            )
            server.set_certificate_validator(gate)
        return server

    async def _build_address_space(self, server: Server, namespace: int) -> None:
        # Typed placeholders; publish_now() replaces them (or marks them Bad) before the server listens.
        initial = telemetry_values(
            EdgeTelemetry(
                cabinet_id=self._cabinet.id,
                soc_pct=0.0,
                active_power_kw=0.0,
                setpoint_kw=0.0,
                charge_limit_kw=0.0,
                discharge_limit_kw=0.0,
                mode=EdgeMode.STARTING,
                schedule_id="",
                schedule_valid_until=None,
                interlock_active=False,
                interlock_reason="",
                cycle_time_p99_ms=0.0,
            )
        )
        cabinet = await server.nodes.objects.add_object(
            node_id(CABINET_OBJECT, namespace), ua.QualifiedName(CABINET_OBJECT, namespace)
        )
        for spec in CABINET_VARIABLES:
            variant = ua.Variant(initial[spec.name], _TYPE_OF[spec.name])
            node = await cabinet.add_variable(
                node_id(f"{CABINET_OBJECT}.{spec.name}", namespace),
                ua.QualifiedName(spec.name, namespace),
                variant,
            )
            self._variables[spec.name] = node
            self._published[spec.name] = (initial[spec.name], _GOOD)
        await cabinet.add_method(
            node_id(f"{CABINET_OBJECT}.{WRITE_SCHEDULE}", namespace),
            ua.QualifiedName(WRITE_SCHEDULE, namespace),
            self._write_schedule,
            WRITE_SCHEDULE_INPUTS,
            RESULT_OUTPUTS,
        )
        await cabinet.add_method(
            node_id(f"{CABINET_OBJECT}.{RESET_INTERLOCK}", namespace),
            ua.QualifiedName(RESET_INTERLOCK, namespace),
            self._reset_interlock,
            [],
            RESULT_OUTPUTS,
        )

    async def _write_schedule(self, parent: ua.NodeId, *arguments: Any) -> list[ua.Variant]:
        return result(call_write_schedule(self._control, arguments))

    async def _reset_interlock(self, parent: ua.NodeId, *arguments: Any) -> list[ua.Variant]:
        return result(call_reset_interlock(self._control, arguments))

    async def _publish_loop(self) -> None:
        interval_s = self._site.opcua.telemetry_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.publish_now()
            except Exception:  # never let the publisher die silently: log and keep going
                _log.exception("edge %s: telemetry update failed", self._cabinet.id)
            await asyncio.sleep(max(0.0, started + interval_s - loop.time()))

    async def publish_now(self) -> None:
        """Mirror the controller's telemetry into the variables that changed."""
        server = self._server
        if server is None:
            return
        try:
            telemetry = self._control.telemetry()
            if telemetry.cabinet_id != self._cabinet.id:
                raise ValueError(f"controller reports cabinet {telemetry.cabinet_id!r}")
            values = telemetry_values(telemetry)
        except Exception as exc:
            if self._healthy:
                _log.error("edge %s: telemetry unavailable, variables marked Bad: %s", self._cabinet.id, exc)
                self._healthy = False
            await self._write_all_bad(server)
            return
        if not self._healthy:
            _log.info("edge %s: telemetry available again", self._cabinet.id)
            self._healthy = True
        timestamp = self._clock.now()
        for spec in CABINET_VARIABLES:
            value = values[spec.name]
            code = _BAD_RANGE if isinstance(value, float) and not math.isfinite(value) else _GOOD
            if self._published.get(spec.name) == (value, code):
                continue
            await self._write(server, spec.name, value, code, timestamp)

    async def _write_all_bad(self, server: Server) -> None:
        timestamp = self._clock.now()
        for name, (value, code) in list(self._published.items()):
            if code != _BAD:
                await self._write(server, name, value, _BAD, timestamp)

    async def _write(
        self, server: Server, name: str, value: object, code: ua.StatusCode, timestamp: datetime
    ) -> None:
        data = ua.DataValue(
            Value=ua.Variant(value, _TYPE_OF[name]),
            StatusCode=code,
            SourceTimestamp=ua_datetime(timestamp),
        )
        await server.write_attribute_value(self._variables[name].nodeid, data)
        self._published[name] = (value, code)
