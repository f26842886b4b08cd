"""The site file (TOML): one file describes a whole site; each component reads its own part.

docs/interfaces.md: site file fixes ``[site]`` and ``[[cabinets]]``. The optional tables ``[edge]``,
``[central]``,
``[opcua]`` and ``[sim]`` hold tuning with sane defaults; every key is documented in docs/configuration.md.
Unknown keys are refused (a typo must not silently fall back to a default on a real plant).
"""

from __future__ import annotations

import math
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigError, Problem, pydantic_location
from shared.plan import DispatchMethod
from shared.units import ProbableUnit


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)


NonNegKw = Annotated[float, Field(ge=0.0)]
Efficiency = Annotated[float, Field(gt=0.0, le=1.0)]
Pct = Annotated[float, Field(ge=0.0, le=100.0)]


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``host:port``; raise ``ValueError`` with the reason when it is not one."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host.strip("[]"), int(port_text)


class FallbackMode(StrEnum):
    """What an edge does when no schedule covers the current interval."""

    IDLE = "idle"  # 0 kW
    SELF_CONSUMPTION = "self_consumption"  # discharge to cover import, charge from export, within limits
    PEAK_SHAVE = "peak_shave"  # discharge only to hold import below peak_shave_threshold_kw


class SiteInfo(_Strict):
    name: str = Field(min_length=1)
    grid_import_limit_kw: NonNegKw
    grid_export_limit_kw: NonNegKw
    demand_charge_per_kw: float = Field(default=0.0, ge=0.0)
    imbalance_price_per_kwh: float = Field(default=1.0, ge=0.0)
    unserved_energy_price_per_kwh: float = Field(default=10.0, gt=0.0)
    meter_modbus_address: str
    fallback_mode: FallbackMode = FallbackMode.SELF_CONSUMPTION
    peak_shave_threshold_kw: NonNegKw | None = None  # default: grid_import_limit_kw

    @field_validator("meter_modbus_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value


class CabinetConfig(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    capacity_kwh: float = Field(gt=0.0)
    charge_limit_kw: NonNegKw
    discharge_limit_kw: NonNegKw
    charge_efficiency: Efficiency
    discharge_efficiency: Efficiency
    soc_min_pct: Pct
    soc_max_pct: Pct
    soc_final_min_pct: Pct | None = None
    cycle_cost_per_kwh: float = Field(default=0.0, ge=0.0)
    opcua_endpoint: str
    modbus_address: str

    @field_validator("modbus_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("opcua_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"{value!r} must start with opc.tcp://")
        parse_host_port(value[len("opc.tcp://") :].split("/", 1)[0])
        return value

    @model_validator(mode="after")
    def _soc_window(self) -> Self:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError(
                f"soc_min_pct ({self.soc_min_pct}) must be below soc_max_pct ({self.soc_max_pct})"
                + self._fraction_hint()
            )
        final = self.soc_final_min_pct
        if final is not None and not self.soc_min_pct <= final <= self.soc_max_pct:
            raise ValueError(
                f"soc_final_min_pct ({final}) must lie in [soc_min_pct, soc_max_pct]"
                f" = [{self.soc_min_pct}, {self.soc_max_pct}]" + self._fraction_hint()
            )
        return self

    def _fraction_hint(self) -> str:
        """Why a SoC window is inconsistent when one of its values was given as a fraction 0-1."""
        values = {"soc_min_pct": self.soc_min_pct, "soc_max_pct": self.soc_max_pct}
        if self.soc_final_min_pct is not None:
            values["soc_final_min_pct"] = self.soc_final_min_pct
        fractions = [f"{key} {value:g}" for key, value in values.items() if 0.0 < value <= 1.0]
        return f" ({', '.join(fractions)}: {ProbableUnit.FRACTION.value})" if fractions else ""

    @property
    def opcua_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.opcua_endpoint[len("opc.tcp://") :].split("/", 1)[0])

    @property
    def modbus_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.modbus_address)


class EdgeSettings(_Strict):
    """Tuning of every edge controller (``[edge]``)."""

    cycle_ms: float = Field(default=100.0, ge=1.0, le=10_000.0)
    comm_timeout_ms: float | None = Field(default=None, gt=0.0)  # default: 3 cycles
    modbus_timeout_ms: float = Field(default=50.0, gt=0.0)
    ramp_kw_per_s: float = Field(default=1000.0, gt=0.0)
    revert_timeout_s: float = Field(default=5.0, gt=0.0)  # device-side WSetRvrtTms
    heartbeat_timeout_s: float = Field(default=3.0, gt=0.0)  # device-side CtrlHb watchdog
    temperature_max_degc: float = 55.0
    cell_voltage_max_v: float = Field(default=3.65, gt=0.0)
    cell_voltage_min_v: float = Field(default=2.8, gt=0.0)
    soc_hard_min_pct: Pct = 2.0
    soc_hard_max_pct: Pct = 98.0
    frozen_data_timeout_s: float = Field(default=10.0, gt=0.0)
    setpoint_mismatch_kw: float = Field(default=1.0, gt=0.0)
    state_dir: str = "var/edge"  # SQLite per cabinet: STATE_DIR/CABINET_ID.sqlite3
    reconnect_min_s: float = Field(default=0.1, gt=0.0)  # first reconnect delay after a lost device
    reconnect_max_s: float = Field(default=5.0, gt=0.0)  # reconnect delay doubles up to this
    comm_recovery_s: float = Field(default=3.0, ge=0.0)  # valid data this long ends a comm-loss hold
    comm_flap_episodes: int = Field(default=5, ge=1)  # this many comm-loss episodes ...
    comm_flap_window_s: float = Field(default=600.0, gt=0.0)  # ... within this window latch comm_loss

    @property
    def effective_comm_timeout_ms(self) -> float:
        return self.comm_timeout_ms if self.comm_timeout_ms is not None else 3.0 * self.cycle_ms


class CentralSettings(_Strict):
    """The central service (``[central]``)."""

    http_address: str = "127.0.0.1:8080"
    database_path: str = "var/central.sqlite3"
    reoptimize_every_minutes: float = Field(default=15.0, gt=0.0)
    api_token: str | None = None  # also EMS_API_TOKEN; required for write endpoints
    push_timeout_s: float = Field(default=2.0, gt=0.0)
    solver_time_limit_s: float = Field(default=30.0, gt=0.0)
    plan_smoothing: bool = True  # the dispatch's second stage (docs/dispatch.md: plan quality)
    dispatch_method: DispatchMethod = DispatchMethod.AUTO  # exact / block_ipm / auto (docs/dispatch.md)
    # Keys below: see docs/central.md.
    telemetry_sample_every_s: float = Field(default=60.0, gt=0.0)  # simulated time
    telemetry_retention_days: float = Field(default=30.0, gt=0.0)
    public_reads: bool = False  # reads open on a non-loopback http_address too (else they need the token)
    # Upload intake (docs/central.md): an upload's start must lie within this window around now.
    upload_start_max_past_days: float = Field(default=2.0, ge=0.0, le=366.0)
    upload_start_max_future_days: float = Field(default=14.0, ge=0.0, le=366.0)
    http_body_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)  # a body must arrive within this
    strict_plausibility: bool = False  # refuse uploads (and start) on plausibility warnings, not only errors
    # Access to the HTTP API: TLS, tokens, audit trail (docs/security.md).
    tls_cert_file: str | None = None  # PEM; `ems certs` makes PKI_DIR/own/central-http.cert.pem
    tls_key_file: str | None = None  # PEM; `ems certs` makes PKI_DIR/own/central-http.key.pem
    insecure_http: bool = False  # plain HTTP allowed on a non-loopback http_address (logged loudly)
    api_tokens_file: str | None = None  # named API tokens; default: api-tokens.toml beside database_path
    audit_retention_days: float = Field(default=365.0, gt=0.0)  # audit records older than this are deleted

    @field_validator("http_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self


OPCUA_SECURITY_POLICIES = ("Aes256_Sha256_RsaPss", "Aes128_Sha256_RsaOaep", "Basic256Sha256")


class OpcUaSettings(_Strict):
    """Security and timing of the OPC UA link (``[opcua]``); see docs/opcua.md."""

    insecure: bool = False  # security mode None; logged as a warning at every start
    pki_dir: str = "pki"  # ems certs writes own/, trusted/ and users.toml here
    users_file: str | None = None  # default: PKI_DIR/users.toml
    central_username: str = "central"
    central_password_env: str = "EMS_OPCUA_PASSWORD"
    # SignAndEncrypt policies the edges offer, strongest first; the central uses the first one.
    security_policies: tuple[str, ...] = Field(default=OPCUA_SECURITY_POLICIES, min_length=1)
    bind_host: str | None = None  # edge listen address; default: the host of the cabinet's opcua_endpoint
    telemetry_interval_ms: float = Field(default=100.0, ge=10.0, le=60_000.0)  # edge variable updates
    publishing_interval_ms: float = Field(default=50.0, ge=10.0, le=60_000.0)  # central subscription
    request_timeout_s: float = Field(default=5.0, gt=0.0)  # central: connect and read requests
    reconnect_min_s: float = Field(default=0.5, gt=0.0)  # central: first reconnect delay
    reconnect_max_s: float = Field(default=10.0, gt=0.0)  # central: backoff cap
    push_retry_s: float = Field(default=5.0, gt=0.0)  # central: retry of an unanswered push
    # central, fleet-wide (see central.edge_link.pacing): secure handshakes at once, retry rate with every
    # edge down (raises the backoff cap to N / this), liveness probes per second (probe period N / this),
    # telemetry publishes per second (raises the publishing interval to N x 1000 / this ms).
    connect_concurrency: int = Field(default=8, ge=1, le=256)
    reconnect_attempts_per_s: float = Field(default=20.0, gt=0.0, le=10_000.0)
    watchdog_probes_per_s: float = Field(default=100.0, gt=0.0, le=10_000.0)
    telemetry_publishes_per_s: float = Field(default=1000.0, gt=0.0, le=100_000.0)

    @field_validator("security_policies")
    @classmethod
    def _policies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in OPCUA_SECURITY_POLICIES:
                known = ", ".join(OPCUA_SECURITY_POLICIES)
                raise ValueError(f"unknown security policy {name!r}; known: {known}")
        _require_unique("security policy", list(value))
        return value

    @model_validator(mode="after")
    def _backoff(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed"
                f" reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


class SimSettings(_Strict):
    """The device simulators (``[sim]``)."""

    ambient_temperature_degc: float = 25.0
    meter_noise_kw: float = Field(default=0.0, ge=0.0)
    control_address: str = "127.0.0.1:15099"  # fault-injection control interface
    profile: str | None = None  # day-ahead file for the load and PV profile; default examples one
    # Keys below: see docs/simulators.md.
    heartbeat_timeout_s: float | None = Field(default=None, ge=0.0)  # CtrlHb watchdog; None: [edge]; 0: off
    watchdog_clock: Literal["wall", "simulated"] = "wall"  # time base of WSetRvrtTms and the CtrlHb watchdog
    response_time_constant_s: float = Field(default=0.5, gt=0.0)  # PCS first-order response (simulated)
    thermal_time_constant_s: float = Field(default=1800.0, gt=0.0)  # cabinet temperature (simulated)
    temperature_rise_at_rated_degc: float = Field(default=15.0, ge=0.0)  # steady rise at rated power
    step_ms: float = Field(default=10.0, ge=1.0, le=1000.0)  # wall-clock period of the physics task
    seed: int | None = None  # meter noise random seed; None: different every run

    @field_validator("control_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value


class SiteConfig(_Strict):
    """A whole site file."""

    site: SiteInfo
    cabinets: list[CabinetConfig] = Field(min_length=1)
    edge: EdgeSettings = EdgeSettings()
    central: CentralSettings = CentralSettings()
    opcua: OpcUaSettings = OpcUaSettings()
    sim: SimSettings = SimSettings()

    @field_validator("cabinets")
    @classmethod
    def _unique_cabinets(cls, cabinets: list[CabinetConfig]) -> list[CabinetConfig]:
        _require_unique("id", [c.id for c in cabinets])
        _require_unique("opcua_endpoint", [c.opcua_endpoint for c in cabinets])
        _require_unique("modbus_address", [c.modbus_address for c in cabinets])
        return cabinets

    @model_validator(mode="after")
    def _meter_address_unique(self) -> Self:
        if self.site.meter_modbus_address in {c.modbus_address for c in self.cabinets}:
            raise ValueError(
                f"site.meter_modbus_address {self.site.meter_modbus_address!r} is also a cabinet's address"
            )
        return self

    def cabinet(self, cabinet_id: str) -> CabinetConfig:
        for cabinet in self.cabinets:
            if cabinet.id == cabinet_id:
                return cabinet
        known = ", ".join(c.id for c in self.cabinets)
        raise KeyError(f"no cabinet {cabinet_id!r} in site {self.site.name!r} (cabinets: {known})")

    @property
    def cabinet_ids(self) -> list[str]:
        return [c.id for c in self.cabinets]


def _require_unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def parse_site(text: str, source: str = "site") -> SiteConfig:
    """Parse site TOML text; raise :class:`ConfigError` naming the key and what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from exc
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from exc
    _check_finite(raw, source)
    return config


def load_site(path: str | Path) -> SiteConfig:
    """Load and validate a site file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(file), [Problem("", f"not UTF-8 text: {exc}")]) from exc
    return parse_site(text, str(file))


def _problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        location = pydantic_location(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (see docs/configuration.md)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(Problem(location, message))
    return problems


def _check_finite(raw: object, source: str, location: str = "") -> None:
    # pydantic already refuses inf/nan for floats; this catches them in free-form tables.
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(source, [Problem(location, "must be a finite number")])
    if isinstance(raw, dict):
        for key, value in raw.items():
            _check_finite(value, source, f"{location}.{key}" if location else str(key))
    if isinstance(raw, list):
        for index, value in enumerate(raw):
            _check_finite(value, source, f"{location}[{index}]")
