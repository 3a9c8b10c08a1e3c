"""Gateway config and device address errors name the file, the key and the fix."""

from pathlib import Path

import pytest

from edge.addresses import parse_address
from edge.config import load_config
from edge.errors import AddressError, ConfigError
from schemas.vocabulary import Protocol

GOOD = """\
gateway: gw-fh-01
community: xijin/fenghuang
broker: mqtt://127.0.0.1:1883
devices:
  - id: fh-b3-smoke-01
    profile: anju-smoke-mb
    address: modbus-tcp://127.0.0.1:5020?unit=2
    building: "3"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    (device,) = config.devices
    assert device.parsed_address.unit == 2
    assert config.broker_address.port == 1883


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("gw-fh-01", "GW 01"), "gateway", "should match pattern"),
        (("xijin/fenghuang", "fenghuang"), "community", "should match pattern"),
        (("mqtt://127.0.0.1:1883", "http://broker"), "broker", "expected mqtt://"),
        (
            ("unit=2", "unit=999"),
            "devices.0.address (device fh-b3-smoke-01)",
            "unit must be a whole number",
        ),
        (
            ("unit=2", "unti=7"),
            "devices.0.address (device fh-b3-smoke-01)",
            "unknown parameter 'unti'; valid parameters: unit",
        ),
        (
            ("unit=2", "unit=2&baud=9600"),
            "devices.0.address (device fh-b3-smoke-01)",
            "parameter 'baud' does not apply to modbus-tcp addresses; valid parameters: unit",
        ),
        (
            ("    building", "    floor"),
            "devices.0.floor (device fh-b3-smoke-01)",
            "allowed keys here are id, profile",
        ),
        (("broker:", "brokr:"), "brokr", "allowed keys here are gateway"),
    ],
)
def test_bad_config_names_key(
    tmp_path: Path, change: tuple[str, str], key: str, problem: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_duplicate_device_ids_refused(tmp_path: Path) -> None:
    device = GOOD.split("devices:\n")[1]
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(write(tmp_path, GOOD + device))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("url", "protocol", "bus", "unit"),
    [
        ("modbus-tcp://10.0.0.5:502?unit=7", Protocol.MODBUS_TCP, "tcp://10.0.0.5:502", 7),
        ("modbus-tcp://10.0.0.5", Protocol.MODBUS_TCP, "tcp://10.0.0.5:502", 1),
        (
            "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E&unit=3",
            Protocol.MODBUS_RTU,
            "modbus-rtu:///dev/ttyUSB0",
            3,
        ),
    ],
)
def test_addresses_parse(url: str, protocol: Protocol, bus: str, unit: int) -> None:
    address = parse_address(url)
    assert (address.protocol, address.bus, address.unit) == (protocol, bus, unit)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("modbus://h", "unknown scheme"),
        ("modbus-tcp://h:port", "port must be a number"),
        ("modbus-rtu://dev/ttyUSB0", "three slashes"),
        ("modbus-rtu:///dev/ttyUSB0?parity=X", "parity must be"),
        ("modbus-rtu:///dev/ttyUSB0?baud=fast", "baud must be"),
    ],
)
def test_bad_addresses_say_why(url: str, problem: str) -> None:
    with pytest.raises(AddressError, match=problem):
        parse_address(url)


def test_ack_timeouts_default_and_their_cap_must_hold_the_timeout(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert (config.uplink.ack_timeout_s, config.uplink.ack_timeout_cap_s) == (30.0, 600.0)

    def uplink(section: str) -> str:
        return GOOD.replace("devices:", f"uplink: {{{section}}}\ndevices:")

    config = load_config(write(tmp_path, uplink("ack_timeout_s: 5, ack_timeout_cap_s: 60")))
    assert (config.uplink.ack_timeout_s, config.uplink.ack_timeout_cap_s) == (5.0, 60.0)
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, uplink("ack_timeout_s: 120, ack_timeout_cap_s: 60")))
    assert raised.value.key == "uplink.ack_timeout_cap_s"
    assert "below ack_timeout_s (120)" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, uplink("ack_timout_s: 5")))
    assert raised.value.key == "uplink.ack_timout_s"
    assert "allowed keys here are ack_timeout_s, ack_timeout_cap_s" in str(raised.value)
