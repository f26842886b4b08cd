"""One live OPC UA session from the central to one edge: connect, subscribe, call the methods.

A session is opened once and used until its connection is lost (``lost`` is then set); reconnecting is
the job of :mod:`central.edge_link.link`, which opens a fresh session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto import uacrypto
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from shared.edge_api import Decision, EdgeTelemetry
from shared.opcua.common import (
    CABINET_OBJECT,
    NAMESPACE_URI,
    RESET_INTERLOCK,
    VARIABLE_NAMES,
    WRITE_SCHEDULE,
    edge_application_uri,
    telemetry_from_values,
)
from shared.opcua.trust import PeerRole, TrustList
from shared.opcua.ua_security import POLICY_CLASSES, CertificateGate, first_der_certificate
from shared.opcua.ua_types import StatusCodes, ua_datetime
from shared.schedule import CabinetSchedule

_log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 60_000  # an edge drops our session (and its subscription) a minute after we vanish
WATCHDOG_S = 1.0  # how often asyncua probes an idle connection (a fleet sets its own, see pacing)


class LinkError(Exception):
    """The edge cannot be used: wrong certificate, wrong address space, another cabinet, wrong user."""


# What an edge answers to ActivateSession when it does not accept the user name and password.
_LOGIN_REFUSED = frozenset(
    {
        StatusCodes.BadUserAccessDenied,
        StatusCodes.BadIdentityTokenRejected,
        StatusCodes.BadIdentityTokenInvalid,
    }
)


@dataclass(frozen=True)
class ClientSecurity:
    """How the central authenticates: its identity, the edges' trust list, its user."""

    username: str
    password: str
    application_uri: str
    insecure: bool
    policy_name: str = "Basic256Sha256"
    certificate_der: bytes = b""
    private_key_pem: bytes = b""
    trust: TrustList | None = None


class EdgeSession:
    """A connected, subscribed session to one edge. Create with :meth:`open`; always :meth:`close`."""

    def __init__(
        self, client: Client, cabinet_id: str, on_change: Callable[[EdgeTelemetry | None], None]
    ) -> None:
        self._client = client
        self._cabinet_id = cabinet_id
        self._on_change = on_change
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._cabinet: Node | None = None
        self._methods: dict[str, ua.NodeId] = {}
        self._names: dict[ua.NodeId, str] = {}
        self._values: dict[str, object] = {}
        self._bad: set[str] = set()
        self._subscription: Subscription | None = None
        self._flush_pending = False
        self._telemetry: EdgeTelemetry | None = None
        self._telemetry_problem = ""
        self._activated = False  # the session was activated (else only the socket may be left open)

    @property
    def telemetry(self) -> EdgeTelemetry | None:
        """The latest consistent telemetry, or None when any variable is missing, Bad or implausible."""
        return self._telemetry

    @classmethod
    async def open(
        cls,
        endpoint: str,
        site_name: str,
        cabinet_id: str,
        security: ClientSecurity,
        *,
        request_timeout_s: float,
        publishing_interval_ms: float,
        on_change: Callable[[EdgeTelemetry | None], None],
        watchdog_s: float = WATCHDOG_S,
    ) -> EdgeSession:
        """Connect, check the edge is the expected cabinet, read and subscribe to its telemetry."""
        client = Client(endpoint, timeout=request_timeout_s, watchdog_intervall=watchdog_s)
        client.application_uri = security.application_uri
        client.name = client.description = f"hybrid-ems central ({site_name})"
        client.product_uri = "urn:hybrid-ems"
        client.session_timeout = SESSION_TIMEOUT_MS
        client.set_user(security.username)
        client.set_password(security.password)
        if not security.insecure:
            edge_uri = edge_application_uri(site_name, cabinet_id)
            await _secure(client, security, edge_uri, request_timeout_s)
        session = cls(client, cabinet_id, on_change)
        client.connection_lost_callback = session._connection_lost
        try:
            await _connect(client, security.username, request_timeout_s)
            session._activated = True
            await asyncio.wait_for(session._prepare(publishing_interval_ms), request_timeout_s)
        except BaseException:
            await session.close()
            raise
        return session

    async def _prepare(self, publishing_interval_ms: float) -> None:
        namespaces: list[str] = await self._client.get_namespace_array()
        if NAMESPACE_URI not in namespaces:
            raise LinkError(f"the server has no namespace {NAMESPACE_URI}: not a hybrid-ems edge")
        namespace = namespaces.index(NAMESPACE_URI)
        try:
            cabinet = await self._client.nodes.objects.get_child(f"{namespace}:{CABINET_OBJECT}")
        except UaStatusCodeError as exc:
            raise LinkError(f"the server has no Objects/{CABINET_OBJECT}: {exc}") from None
        children = {ref.BrowseName.Name: ref.NodeId for ref in await cabinet.get_children_descriptions()}
        missing = [n for n in (*VARIABLE_NAMES, WRITE_SCHEDULE, RESET_INTERLOCK) if n not in children]
        if missing:
            raise LinkError(f"the edge's {CABINET_OBJECT} lacks {', '.join(missing)}")
        self._cabinet = cabinet
        self._methods = {name: children[name] for name in (WRITE_SCHEDULE, RESET_INTERLOCK)}
        self._names = {children[name]: name for name in VARIABLE_NAMES}
        nodes = [self._client.get_node(children[name]) for name in VARIABLE_NAMES]
        for name, data in zip(VARIABLE_NAMES, await self._client.read_attributes(nodes), strict=True):
            self._store(name, data)
        self._rebuild()
        reported = self._values.get("CabinetId", self._cabinet_id)  # unknown while the edge marks it Bad
        if reported != self._cabinet_id:
            raise LinkError(f"the edge reports CabinetId {reported!r}, expected {self._cabinet_id!r}")
        self._subscription = await self._client.create_subscription(publishing_interval_ms, self)
        await self._subscription.subscribe_data_change(nodes)

    def datachange_notification(self, node: Node, value: Any, data: DataChangeNotif) -> None:
        """asyncua subscription callback, one call per changed variable."""
        name = self._names.get(node.nodeid)
        if name is None:
            return
        self._store(name, data.monitored_item.Value)
        # Variables of one publish arrive as separate callbacks; rebuild once after the batch.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        _log.warning("edge %s: subscription status %s", self._cabinet_id, status.Status)

    def _store(self, name: str, data: ua.DataValue | None) -> None:
        good = data is not None and data.StatusCode is not None and data.StatusCode.is_good()
        if good and data is not None and data.Value is not None:
            self._values[name] = data.Value.Value
            self._bad.discard(name)
        else:
            self._bad.add(name)

    def _flush(self) -> None:
        self._flush_pending = False
        self._rebuild()
        self._on_change(self._telemetry)

    def _rebuild(self) -> None:
        if self._bad:
            self._set_problem(f"variables marked Bad by the edge: {', '.join(sorted(self._bad))}")
            return
        try:
            self._telemetry = telemetry_from_values(self._values, self._cabinet_id)
            self._telemetry_problem = ""
        except ValueError as exc:
            self._set_problem(str(exc))

    def _set_problem(self, problem: str) -> None:
        if problem != self._telemetry_problem:
            _log.warning("edge %s: telemetry unusable: %s", self._cabinet_id, problem)
        self._telemetry = None
        self._telemetry_problem = problem

    async def write_schedule(self, schedule: CabinetSchedule) -> Decision:
        return await self._call(
            WRITE_SCHEDULE,
            ua.Variant(schedule.schedule_id, ua.VariantType.String),
            ua.Variant(ua_datetime(schedule.start), ua.VariantType.DateTime),
            ua.Variant(schedule.interval_s, ua.VariantType.UInt32),
            ua.Variant(list(schedule.setpoints_kw), ua.VariantType.Double),
        )

    async def reset_interlock(self) -> Decision:
        return await self._call(RESET_INTERLOCK)

    async def _call(self, method: str, *arguments: ua.Variant) -> Decision:
        if self._cabinet is None:
            raise LinkError("session is not prepared")
        outputs = await self._cabinet.call_method(self._methods[method], *arguments)
        if not isinstance(outputs, list) or len(outputs) != 2:
            raise LinkError(f"{method} returned {outputs!r}, expected (Accepted, Message)")
        accepted, message = outputs
        if not isinstance(accepted, bool) or not isinstance(message, str):
            raise LinkError(f"{method} returned {outputs!r}, expected (Boolean, String)")
        return Decision(accepted, message)

    async def _connection_lost(self, exc: Exception) -> None:
        self.lost_reason = str(exc) or type(exc).__name__
        self._telemetry = None
        self.lost.set()

    async def close(self) -> None:
        """Close the session; quick even when the edge is gone."""
        self._client.connection_lost_callback = None
        self._telemetry = None
        if not self._activated:
            # A failed connect closed its channel itself; one cut short by the timeout may leave the socket
            # open. asyncua's full disconnect would log a WARNING for the missing channel at every retry.
            with contextlib.suppress(Exception):
                self._client.disconnect_socket()
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2.0)


async def _connect(client: Client, username: str, timeout_s: float) -> None:
    """Open the secure channel and activate the session; a refused login is named as such (asyncua's
    text for BadUserAccessDenied speaks of permissions, which sends an operator the wrong way)."""
    try:
        await asyncio.wait_for(client.connect(), timeout_s)
    except UaStatusCodeError as exc:
        if exc.code not in _LOGIN_REFUSED:
            raise
        name = type(exc).__name__
        raise LinkError(
            f"wrong user name or password: the edge refused OPC UA user {username!r} ({name}); the password"
            " must match that user's entry in the edge's users file (see `ems certs`)"
        ) from None


async def _secure(client: Client, security: ClientSecurity, edge_uri: str, timeout_s: float) -> None:
    trust = security.trust
    if trust is None:
        raise LinkError("no trust list for the edges' certificates")
    gate = CertificateGate(trust, PeerRole.SERVER, expected_uri=edge_uri)
    # Pin the edge: its certificate must be in the trust list under the cabinet's application URI, or,
    # with a site CA, the certificate the edge announces must be issued by the CA for that URI.
    server_certificate = trust.find_by_uri(edge_uri, datetime.now(UTC))
    if server_certificate is None and trust.has_authorities():
        server_certificate = await _announced_certificate(client, security.policy_name, timeout_s)
    if server_certificate is None:
        raise LinkError(f"no valid certificate for {edge_uri} in the trust list {trust.directory}")
    refusal = gate.check(server_certificate)
    if refusal is not None:
        raise LinkError(f"edge certificate refused: {refusal}")
    # What asyncua's set_security does, without parsing the PEM key again at every attempt: loading an RSA
    # key checks it, tens of milliseconds of CPU on the event loop, which many edges retrying turned into
    # an unresponsive central.
    own_certificate = _own_certificate(security.certificate_der)
    uacrypto.check_certificate(own_certificate, client.application_uri, socket.gethostname())
    policy = POLICY_CLASSES[security.policy_name](
        server_certificate,
        own_certificate,
        _private_key(security.private_key_pem),
        ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.security_policy = policy  # type: ignore[assignment]  # asyncua infers its initial None policy
    client.uaclient.set_security(policy)
    client.certificate_validator = gate


@functools.lru_cache(maxsize=8)
def _private_key(pem: bytes) -> PrivateKeyTypes:
    """The central's private key, parsed once per process (the PEM is the cache key)."""
    return serialization.load_pem_private_key(pem, password=None)


@functools.lru_cache(maxsize=8)
def _own_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


async def _announced_certificate(client: Client, policy_name: str, timeout_s: float) -> x509.Certificate:
    """The certificate the server announces for ``policy_name`` (GetEndpoints over an unsecured channel;
    the caller checks it before trusting anything it says)."""
    endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout_s)
    endpoint = Client.find_endpoint(
        endpoints, ua.MessageSecurityMode.SignAndEncrypt, POLICY_CLASSES[policy_name].URI
    )
    try:
        return x509.load_der_x509_certificate(first_der_certificate(endpoint.ServerCertificate or b""))
    except ValueError as exc:
        raise LinkError(f"the edge announces no usable certificate: {exc}") from None
