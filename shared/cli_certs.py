"""``ems certs --site S [--out DIR] [--ca] [--revoke NODE]``: keys, certificates, trust lists and users of a
site's OPC UA link, and the TLS certificate of the central's HTTP API.

Idempotent: what exists and is still usable is kept, what is missing or unusable is created. Passwords are
taken from the environment when set there, otherwise generated and printed once (only hashes are stored).
``--ca`` makes a site certificate authority that issues every certificate; ``--revoke NODE`` adds a
CA-issued certificate to the CA's revocation list.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import InputError, Problem

if TYPE_CHECKING:
    from shared.opcua.pki import PkiLayout
    from shared.site import SiteConfig

VIEWER_PASSWORD_ENV = "EMS_OPCUA_VIEWER_PASSWORD"  # nosec B105  # the name of a variable, not a secret


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create OPC UA keys, certificates, trust lists and users for a site",
        description="Create what a site's OPC UA link needs: a key and a certificate per edge and for the "
        "central (application URI in the certificate), the trust directories and a users file with the "
        "central's operator user; and the TLS key and certificate of the central's HTTP API. Certificates "
        "are self-signed, or issued by a site CA (--ca). Keeps what exists and is usable; see "
        "docs/opcua.md and docs/security.md.",
    )
    parser.add_argument("--site", type=Path, required=True, help="site file (.toml)")
    parser.add_argument("--out", type=Path, help="PKI directory (default: [opcua] pki_dir of the site)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="new keys and certificates for every node, and a new central password",
    )
    parser.add_argument("--key-bits", type=int, choices=(2048, 3072, 4096), default=2048, help="RSA key size")
    parser.add_argument("--days", type=int, default=730, help="certificate validity [days] (default 730)")
    parser.add_argument(
        "--central-host",
        action="append",
        default=[],
        metavar="HOST",
        help="host name or IP of the central for its certificate (repeatable; default: localhost, this host)",
    )
    parser.add_argument(
        "--viewer",
        metavar="NAME",
        help=f"also create or reset a read-only viewer user NAME (password: {VIEWER_PASSWORD_ENV} or new)",
    )
    parser.add_argument(
        "--ca",
        action="store_true",
        help="create a site certificate authority (PKI_DIR/ca) that issues every certificate; nodes then "
        "trust what it issued unless its CRL lists it. Later runs keep using it",
    )
    parser.add_argument(
        "--revoke",
        metavar="NODE",
        help="revoke NODE's current certificate in the site CA's CRL (central, central-http, edge-CABINET) "
        "and publish the CRL; nothing else is changed. The next run issues NODE a new certificate",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.opcua.pki import pki_layout, users_path
    from shared.opcua.provision import ensure_site_pki
    from shared.site import load_site

    if not 1 <= args.days <= 36_500:
        raise InputError("--days", [Problem("", f"must be 1..36500, got {args.days}")])
    site = load_site(args.site)
    layout = pki_layout(site, args.out)
    if args.revoke is not None:
        return _revoke(layout, args.revoke)
    central_password = _password_from_env(site.opcua.central_password_env)
    viewer_password = _password_from_env(VIEWER_PASSWORD_ENV) if args.viewer else None
    report = ensure_site_pki(
        site,
        layout,
        force=args.force,
        key_bits=args.key_bits,
        validity_days=args.days,
        central_hosts=args.central_host,
        create_ca=args.ca,
    )
    for line in report.created:
        print(f"created  {line}")
    for line in report.kept:
        print(f"kept     {line}")
    for line in report.removed:
        print(f"removed  {line}")
    path = users_path(site, layout)
    _update_users(path, site.opcua.central_username, site.opcua.central_password_env, central_password, args)
    if args.viewer:
        _set_user(path, args.viewer, "viewer", viewer_password, VIEWER_PASSWORD_ENV, "for a read-only client")
    print(
        f"\nPKI in {layout.root}. Copy to each edge: own/edge-ID.*, trusted/clients/, {path.name}; "
        "to the central: own/central.*, own/central-http.*, trusted/servers/; to HTTP clients: "
        f"{layout.http_trust_path.relative_to(layout.root)}. Keep own/*.key.pem secret"
        + (" and ca/ off the plant network." if layout.ca_key_path.exists() else ".")
    )
    _tls_hint(site, layout)
    return 0


def _revoke(layout: PkiLayout, node: str) -> int:
    from datetime import UTC, datetime

    from shared.opcua.ca import revoked_entries
    from shared.opcua.provision import revoke_node

    certificate, crl = revoke_node(layout, node, datetime.now(UTC))
    print(
        f"revoked  {node}: certificate serial {certificate.serial_number:x} is in the CRL "
        f"{layout.ca_crl_path} ({len(revoked_entries(crl))} revoked)\n"
        "Copy trusted/clients/site-ca.crl to every edge and trusted/servers/site-ca.crl to the central "
        "(they pick it up without a restart), and trusted/http-ca.pem to HTTP clients. "
        f"The next `ems certs` issues {node} a new certificate."
    )
    return 0


def _tls_hint(site: SiteConfig, layout: PkiLayout) -> None:
    cert, key = layout.http_cert_path, layout.key_path("central-http")
    if site.central.tls_cert_file is None:
        print(
            f'The HTTP API runs without TLS until the site file sets [central] tls_cert_file = "{cert}" '
            f'and tls_key_file = "{key}".'
        )


def _password_from_env(variable: str) -> str | None:
    from shared.opcua.users import password_problem

    password = os.environ.get(variable)
    if not password:
        return None
    problem = password_problem(password)
    if problem is not None:
        raise InputError(variable, [Problem("", problem)])
    return password


def _update_users(
    path: Path, username: str, env: str, password: str | None, args: argparse.Namespace
) -> None:
    from shared.opcua.users import Users, load_users

    users = load_users(path) if path.is_file() else Users(())
    existing = users.find(username)
    if existing is not None and not args.force and password is None:
        print(f"kept     user {username!r} ({existing.role.value}) in {path}")
        return
    _set_user(path, username, "operator", password, env, f"the central reads it from {env}")


def _set_user(path: Path, name: str, role: str, password: str | None, env: str, hint: str) -> None:
    from shared.opcua.users import (
        Role,
        UserEntry,
        Users,
        generate_password,
        hash_password,
        load_users,
        write_users,
    )

    users = load_users(path) if path.is_file() else Users(())
    chosen = password or generate_password()
    write_users(path, users.with_user(UserEntry(name, Role(role), hash_password(chosen))))
    if password is not None:
        print(f"set      user {name!r} ({role}) in {path} with the password from {env}")
        return
    print(f"set      user {name!r} ({role}) in {path}; its password ({hint}), shown only now:")
    print(f"    {chosen}")
