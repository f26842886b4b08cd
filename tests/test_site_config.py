"""Site file: the example is valid; every kind of bad file is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.site import FallbackMode, load_site, parse_site
from tests.support import site_toml

EXAMPLE = Path(__file__).parent.parent / "examples" / "site.toml"


def test_example_site_is_valid() -> None:
    site = load_site(EXAMPLE)
    assert site.site.name == "demo-site"
    assert site.cabinet_ids == ["cab-1", "cab-2", "cab-3"]
    assert site.site.grid_import_limit_kw == 400.0
    assert site.cabinet("cab-3").capacity_kwh == 400.0
    assert site.cabinet("cab-3").soc_final_min_pct is None
    assert site.cabinet("cab-1").opcua_host_port == ("127.0.0.1", 4841)
    assert site.site.fallback_mode is FallbackMode.SELF_CONSUMPTION


def test_defaults_of_tuning_sections() -> None:
    site = parse_site(site_toml(1))
    assert site.edge.cycle_ms == 100.0
    assert site.edge.effective_comm_timeout_ms == 300.0  # 3 cycles
    assert site.opcua.insecure is False


def _refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.toml")
    return info.value


def test_unknown_key_is_refused_with_its_path() -> None:
    error = _refusal(
        site_toml(2).replace("capacity_kwh = 200.0", "capacity_kwh = 200.0\ncapacty_kw = 1.0", 1)
    )
    assert "cabinets[0].capacty_kw" in str(error)
    assert "unknown key" in str(error)
    assert error.lines()[0].startswith("site.toml: ")


@pytest.mark.parametrize(
    ("old", "new", "where", "what"),
    [
        ("capacity_kwh = 200.0", "capacity_kwh = -5.0", "cabinets[0].capacity_kwh", "greater than 0"),
        ("charge_efficiency = 0.95", "charge_efficiency = 1.5", "cabinets[0].charge_efficiency", "1"),
        ("soc_min_pct = 10.0", "soc_min_pct = 95.0", "cabinets[0]", "soc_min_pct"),
        ("capacity_kwh = 200.0", "capacity_kwh = nan", "cabinets[0].capacity_kwh", "finite"),
        ("capacity_kwh = 200.0", 'capacity_kwh = "big"', "cabinets[0].capacity_kwh", "number"),
        ('id = "cab-1"', 'id = "cab-2"', "cabinets", "duplicate id"),
        ("grid_import_limit_kw = 400.0", "grid_import_limit_kw = -1.0", "site.grid_import_limit_kw", "0"),
    ],
)
def test_bad_values_are_refused(old: str, new: str, where: str, what: str) -> None:
    error = _refusal(site_toml(2).replace(old, new, 1))
    message = str(error)
    assert where in message
    assert what in message


def test_missing_key_and_bad_address() -> None:
    text = site_toml(1)
    line = next(row for row in text.splitlines() if row.startswith("modbus_address"))
    assert "cabinets[0].modbus_address" in str(_refusal(text.replace(line, "")))
    assert "port" in str(_refusal(text.replace(line, 'modbus_address = "127.0.0.1:99999"')))
    endpoint = next(row for row in text.splitlines() if row.startswith("opcua_endpoint"))
    bad = text.replace(endpoint, 'opcua_endpoint = "http://127.0.0.1:4840"')
    assert "opc.tcp://" in str(_refusal(bad))


def test_not_toml_and_no_cabinets() -> None:
    assert "not valid TOML" in str(_refusal("[site\nname="))
    head = site_toml(1).split("[[cabinets]]")[0]
    assert "cabinets" in str(_refusal(head))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_site(tmp_path / "missing.toml")
