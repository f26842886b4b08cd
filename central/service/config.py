"""The service's process-level settings: the ``[central]`` table of the site file and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from central.service.auth import LEGACY_ENV_NAME, LEGACY_SITE_NAME
from central.service.tokens import tokens_path
from shared.site import SiteConfig, parse_host_port
from shared.tls import is_loopback

API_TOKEN_ENV = "EMS_API_TOKEN"  # nosec B105  # the name of a variable, not a secret


@dataclass(frozen=True)
class ServiceConfig:
    """Process-level settings of the service, resolved from the site file and the environment."""

    database_path: Path
    http_host: str
    http_port: int  # 0: any free port (see CentralService.http_port)
    api_token: str | None  # the single operator token (EMS_API_TOKEN or [central] api_token), if any
    read_token_required: bool  # reads need the token too (non-loopback address without public_reads)
    opcua_username: str
    opcua_password: str
    # Access to the HTTP API (docs/security.md).
    api_token_name: str = LEGACY_ENV_NAME  # the single operator token's name in the audit trail
    tokens_file: Path = Path("var/api-tokens.toml")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    insecure_http: bool = False  # plain HTTP on a non-loopback address allowed
    audit_retention_days: float = 365.0

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @classmethod
    def from_site(cls, site: SiteConfig, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """``EMS_API_TOKEN`` wins over ``[central] api_token``; the OPC UA password comes from the
        variable named by ``[opcua] central_password_env``. A relative database path is relative to the
        working directory."""
        env = os.environ if environ is None else environ
        central = site.central
        host, port = parse_host_port(central.http_address)
        from_env = (env.get(API_TOKEN_ENV) or "").strip() or None
        token = from_env or (central.api_token or "").strip() or None
        return cls(
            database_path=Path(central.database_path),
            http_host=host,
            http_port=port,
            api_token=token,
            read_token_required=not is_loopback(host) and not central.public_reads,
            opcua_username=site.opcua.central_username,
            opcua_password=env.get(site.opcua.central_password_env, ""),
            api_token_name=LEGACY_ENV_NAME if from_env else LEGACY_SITE_NAME,
            tokens_file=tokens_path(site),
            tls_cert_file=None if central.tls_cert_file is None else Path(central.tls_cert_file),
            tls_key_file=None if central.tls_key_file is None else Path(central.tls_key_file),
            insecure_http=central.insecure_http,
            audit_retention_days=central.audit_retention_days,
        )
