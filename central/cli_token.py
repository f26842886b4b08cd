"""``ems token add|list|revoke --site S``: the named tokens of the central's HTTP API.

The tokens file (``[central] api_tokens_file``) holds only salted hashes; ``add`` prints the token once.
A running service notices a change at its next request, no restart needed. Changes are written to the
audit trail in the central's database as done by ``local:<user>`` from ``local``.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from central.service.audit import AuditAction, AuditLog
    from shared.site import SiteConfig

ROLES = ("viewer", "uploader", "operator")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token",
        help="add, list or revoke named tokens of the central's HTTP API",
        description="Manage the named bearer tokens of the central's HTTP API. Roles: viewer (reads), "
        "uploader (viewer + day-ahead upload), operator (everything). Only salted hashes are stored; "
        "`add` prints the token once. A running service uses a change from its next request on. Every "
        "change is written to the audit trail. See docs/security.md.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a token and print it once")
    add.add_argument("name", metavar="NAME", help="token name (letters, digits, _ . @ -; at most 64)")
    add.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    listing = actions.add_parser("list", help="list the tokens (names, roles, key ids; never secrets)")
    listing.add_argument("--json", action="store_true", help="print one JSON array instead of a table")
    revoke = actions.add_parser("revoke", help="revoke a token: refused from the next request on")
    revoke.add_argument("name", metavar="NAME", help="token name")
    for sub in (add, listing, revoke):
        sub.add_argument("--site", type=Path, required=True, help="site file (TOML)")
        sub.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from central.service.tokens import tokens_path
    from shared.site import load_site

    site = load_site(args.site)  # InputError: printed by `ems`, exit 2
    path = tokens_path(site)
    if args.action == "list":
        return _list(path, args.json)
    audit = _open_audit(site)
    if audit is None:
        return 1
    try:
        if args.action == "add":
            return _add(path, args.name, args.role, audit)
        return _revoke(path, args.name, audit)
    finally:
        audit.close()


def _list(path: Path, as_json: bool) -> int:
    from central.service.tokens import load_tokens
    from shared.timeutil import format_utc

    entries = load_tokens(path).entries
    rows = [
        {"name": e.name, "role": e.role.value, "key_id": e.key_id, "created_at": format_utc(e.created_at)}
        for e in entries
    ]
    if as_json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no tokens in {path} (add one with `ems token add NAME --role ROLE --site S`)")
        return 0
    print(f"{'name':<24} {'role':<9} {'key id':<13} created")
    for row in rows:
        print(f"{row['name']:<24} {row['role']:<9} {row['key_id']:<13} {row['created_at']}")
    return 0


def _add(path: Path, name: str, role: str, audit: AuditLog) -> int:
    from central.service.audit import AuditAction
    from central.service.tokens import ApiRole, add_token

    with _audited(audit, AuditAction.TOKEN_ADD, f"token {name!r} ({role})"):
        entry, token = add_token(path, name, ApiRole(role))
    print(f"added token {entry.name!r} ({entry.role.value}, key id {entry.key_id}) to {path}")
    print("Its secret, shown only now (send it as `Authorization: Bearer <token>`):")
    print(f"    {token}")
    return 0


def _revoke(path: Path, name: str, audit: AuditLog) -> int:
    from central.service.audit import AuditAction
    from central.service.tokens import revoke_token

    with _audited(audit, AuditAction.TOKEN_REVOKE, f"token {name!r}"):
        entry = revoke_token(path, name)
    print(f"revoked token {entry.name!r} ({entry.role.value}); a running service refuses it from now on")
    return 0


@contextlib.contextmanager
def _audited(audit: AuditLog, action: AuditAction, detail: str) -> Iterator[None]:
    """Write the audit record of a command-line token change: success, or refused with the reason."""
    from central.service.audit import AuditEntry, AuditOutcome
    from shared.errors import InputError

    actor = f"local:{_user()}"
    try:
        yield
    except InputError as exc:
        audit.add(AuditEntry(actor, "", "local", action, AuditOutcome.REFUSED, 0, f"{detail}: {exc}"))
        raise
    audit.add(AuditEntry(actor, "", "local", action, AuditOutcome.SUCCESS, 0, detail))


def _open_audit(site: SiteConfig) -> AuditLog | None:
    import sqlite3

    from central.service.audit import AuditLog

    path = Path(site.central.database_path)
    try:
        return AuditLog(path, site.central.audit_retention_days)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot write the audit trail to {path}: {exc}; nothing changed", file=sys.stderr)
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"
