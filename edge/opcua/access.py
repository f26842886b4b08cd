"""Who may do what on an edge's OPC UA server: users from the users file, roles, and the client trust list.

asyncua asks :class:`EdgeUserManager` at ActivateSession and :class:`RoleRuleset` before every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

from shared.opcua.ua_security import CertificateGate
from shared.opcua.ua_types import ObjectIds, numeric_node_id
from shared.opcua.users import Role, UserEntry, Users, UsersFileError, load_users

_log = logging.getLogger(__name__)


@dataclass
class EdgeUser(User):
    """An authenticated user with its hybrid-ems role (asyncua's own roles are Admin/User/Anonymous)."""

    ems_role: Role = Role.VIEWER


def _ids(*names: str) -> frozenset[ua.NodeId]:
    return frozenset(
        numeric_node_id(getattr(ObjectIds, f"{name}Request_Encoding_DefaultBinary")) for name in names
    )


# Reading, browsing and subscribing; no Write (all variables are read-only), no node management.
VIEWER_REQUESTS = _ids(
    "CloseSession",
    "CloseSecureChannel",
    "GetEndpoints",
    "FindServers",
    "Read",
    "Browse",
    "BrowseNext",
    "TranslateBrowsePathsToNodeIds",
    "RegisterNodes",
    "UnregisterNodes",
    "CreateSubscription",
    "ModifySubscription",
    "DeleteSubscriptions",
    "TransferSubscriptions",
    "SetPublishingMode",
    "Publish",
    "Republish",
    "CreateMonitoredItems",
    "ModifyMonitoredItems",
    "DeleteMonitoredItems",
    "SetMonitoringMode",
)
OPERATOR_REQUESTS = VIEWER_REQUESTS | _ids("Call")


class RoleRuleset(SimpleRoleRuleset):
    """``operator`` may call methods; ``viewer`` may read, browse and subscribe; anyone else nothing."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Any) -> bool:
        if not isinstance(user, EdgeUser):
            return False
        allowed = OPERATOR_REQUESTS if user.ems_role is Role.OPERATOR else VIEWER_REQUESTS
        if action_type_id in allowed:
            return True
        _log.warning(
            "denied %s to user %r (role %s)", _request_name(action_type_id), user.name, user.ems_role.value
        )
        return False


def _request_name(type_id: ua.NodeId) -> str:
    suffix = "Request_Encoding_DefaultBinary"
    for name, value in vars(ObjectIds).items():
        if name.endswith(suffix) and value == type_id.Identifier and type_id.NamespaceIndex == 0:
            return name[: -len(suffix)]
    return str(type_id)


class EdgeUserManager(UserManager):
    """Username/password users from the users file (reloaded when it changes), on a trusted channel only.

    asyncua calls :meth:`get_user` synchronously at ActivateSession, with the certificate the client's
    secure channel was opened with. That certificate is checked first, so a client cannot use a trusted
    certificate it does not hold the key for (CreateSession only sees a claimed certificate), and an
    untrusted client learns nothing about passwords. A successful scrypt verification is remembered as an
    HMAC under a per-process random key, so reconnects do not stall the event loop for the scrypt time
    again; failed attempts always pay it.
    """

    def __init__(self, path: Path, gate: CertificateGate | None) -> None:
        self._path = path
        self._gate = gate
        self._users = load_users(path)  # a bad file at start is an error the caller reports
        self._signature = _file_signature(path)
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[tuple[str, str], bytes] = {}

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if self._gate is not None:
            refusal = self._gate.check_der(certificate if isinstance(certificate, bytes) else None)
            if refusal is not None:
                _log.warning("refused session activation: %s", refusal)
                return None
        if not username or password is None:
            _log.warning("refused session activation without user name and password")
            return None
        users = self._current_users()
        if users is None:
            return None
        entry = self._authenticate(users, username, password)
        if entry is None:
            _log.warning("refused session activation: wrong user name or password for %r", username)
            return None
        _log.info("user %r (%s) activated a session", entry.name, entry.role.value)
        return EdgeUser(role=UserRole.User, name=entry.name, ems_role=entry.role)

    def _authenticate(self, users: Users, username: str, password: str) -> UserEntry | None:
        entry = users.find(username)
        token = hmac.new(self._cache_key, password.encode("utf-8"), hashlib.sha256).digest()
        if entry is not None:
            remembered = self._verified.get((entry.name, entry.password_hash))
            if remembered is not None and hmac.compare_digest(remembered, token):
                return entry
        entry = users.authenticate(username, password)
        if entry is not None:
            self._verified[(entry.name, entry.password_hash)] = token
        return entry

    def _current_users(self) -> Users | None:
        signature = _file_signature(self._path)
        if signature != self._signature:
            try:
                self._users = load_users(self._path)
            except UsersFileError as exc:
                # Fail closed: a broken users file admits nobody until it is fixed.
                _log.error("users file unusable, refusing all logins: %s", exc)
                return None
            self._signature = signature
            self._verified.clear()
            _log.info("reloaded users file %s (%d users)", self._path, len(self._users.entries))
        return self._users


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size
