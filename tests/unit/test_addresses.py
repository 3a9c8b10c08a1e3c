"""Device address URLs: every scheme takes its own parameters and refuses any other.

A parameter passed over would send the gateway to the wrong device (``?unti=7``
polled unit 1), so each refusal is checked to name the parameter and what the
scheme takes instead.
"""

import re

import pytest

from edge.addresses import PARAMETERS, DeviceAddress, parse_address
from edge.errors import AddressError
from schemas.vocabulary import Protocol

TCP, RTU, SERIAL, OSDP, BLE = (
    Protocol.MODBUS_TCP,
    Protocol.MODBUS_RTU,
    Protocol.SERIAL,
    Protocol.OSDP,
    Protocol.BLE,
)

VALID = [
    ("modbus-tcp://10.0.0.5:5020?unit=7", DeviceAddress(TCP, host="10.0.0.5", port=5020, unit=7)),
    ("modbus-tcp://gw.local", DeviceAddress(TCP, host="gw.local", port=502, unit=1)),
    ("modbus-tcp://[fd00::5]:502/?unit=0", DeviceAddress(TCP, host="fd00::5", port=502, unit=0)),
    (
        "modbus-rtu:///dev/ttyUSB0?baud=19200&parity=e&unit=3",
        DeviceAddress(RTU, path="/dev/ttyUSB0", unit=3, baud=19200, parity="E"),
    ),
    ("modbus-rtu:///dev/ttyUSB0", DeviceAddress(RTU, path="/dev/ttyUSB0", unit=1, baud=9600)),
    (
        "serial:///dev/ttyS1?baud=115200&parity=O&bytesize=7&stopbits=2",
        DeviceAddress(SERIAL, path="/dev/ttyS1", baud=115200, parity="O", bytesize=7, stopbits=2),
    ),
    ("serial:///dev/ttyS1", DeviceAddress(SERIAL, path="/dev/ttyS1", baud=9600, parity="N")),
    (
        "osdp:///dev/ttyUSB1?address=126&baud=38400",
        DeviceAddress(OSDP, path="/dev/ttyUSB1", unit=126, baud=38400),
    ),
    ("osdp:///dev/ttyUSB1", DeviceAddress(OSDP, path="/dev/ttyUSB1", unit=0, baud=9600)),
    ("ble://aa:bb:cc:dd:ee:0f", DeviceAddress(BLE, host="AA:BB:CC:DD:EE:0F")),
]


def test_every_scheme_has_its_parameters_and_a_valid_example() -> None:
    assert set(PARAMETERS) == set(Protocol)
    assert {expected.protocol for _, expected in VALID} == set(Protocol)


@pytest.mark.parametrize(("url", "expected"), VALID)
def test_valid_address_parses_and_prints_back_to_itself(url: str, expected: DeviceAddress) -> None:
    address = parse_address(url)
    assert address == expected
    assert parse_address(str(address)) == address


def test_printed_addresses_spell_out_every_setting_but_a_serial_rate_left_to_the_profile() -> None:
    printed = [str(parse_address(url)) for url, _ in VALID]
    assert printed == [
        "modbus-tcp://10.0.0.5:5020?unit=7",
        "modbus-tcp://gw.local:502?unit=1",
        "modbus-tcp://[fd00::5]:502?unit=0",
        "modbus-rtu:///dev/ttyUSB0?baud=19200&parity=E&unit=3",
        "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=1",
        "serial:///dev/ttyS1?baud=115200&parity=O&bytesize=7&stopbits=2",
        "serial:///dev/ttyS1?parity=N&bytesize=8&stopbits=1",
        "osdp:///dev/ttyUSB1?address=126&baud=38400",
        "osdp:///dev/ttyUSB1?address=0&baud=9600",
        "ble://AA:BB:CC:DD:EE:0F",
    ]


BASES = {
    TCP: ("modbus-tcp://10.0.0.5:502", "valid parameters: unit"),
    RTU: ("modbus-rtu:///dev/ttyUSB0", "valid parameters: unit, baud, parity"),
    SERIAL: ("serial:///dev/ttyS1", "valid parameters: baud, parity, bytesize, stopbits"),
    OSDP: ("osdp:///dev/ttyUSB1", "valid parameters: address, baud"),
    BLE: ("ble://AA:BB:CC:DD:EE:FF", "a ble address takes none"),
}


@pytest.mark.parametrize("protocol", list(Protocol))
def test_unknown_parameter_is_refused_with_the_valid_ones(protocol: Protocol) -> None:
    base, valid = BASES[protocol]
    with pytest.raises(AddressError) as caught:
        parse_address(f"{base}?unti=7")
    assert caught.value.problem == f"unknown parameter 'unti'; {valid}"
    assert caught.value.address == f"{base}?unti=7"


@pytest.mark.parametrize(
    ("protocol", "name"),
    [(TCP, "baud"), (RTU, "address"), (SERIAL, "unit"), (OSDP, "parity"), (BLE, "unit")],
)
def test_parameter_of_another_scheme_is_refused_with_the_valid_ones(
    protocol: Protocol, name: str
) -> None:
    base, valid = BASES[protocol]
    with pytest.raises(AddressError) as caught:
        parse_address(f"{base}?{name}=1")
    assert (
        caught.value.problem
        == f"parameter {name!r} does not apply to {protocol} addresses; {valid}"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("modbus-tcp://h:502?unit=1&unit=2", "parameter 'unit' is given twice"),
        ("modbus-tcp://h:502?unit=", "parameter 'unit' has no value"),
        ("modbus-tcp://h:502?unit", "parameter 'unit' has no value"),
        ("modbus-tcp://h:502?unit=1&", "an empty parameter"),
        ("modbus-tcp://h:502/unit/7", "a modbus-tcp address has no path, yet '/unit/7' follows"),
        ("modbus-tcp://h:502#unit=7", "unexpected #unit=7"),
        ("modbus-tcp://admin@h:502", "no user name"),
        ("modbus-tcp://h:0", "port must be a number from 1 to 65535"),
        ("modbus-tcp://h:", "port must be a number from 1 to 65535"),
        ("modbus-tcp://h:70000", "port must be a number from 1 to 65535"),
        ("modbus-tcp://:502", "expected modbus-tcp://HOST:PORT"),
        ("modbus-tcp://[::1", "not a URL"),
        ("modbus-tcp://h?unit=248", "unit must be a whole number from 0 to 247, not '248'"),
        ("modbus-rtu:///dev/ttyUSB0?baud=fast", "baud must be a whole number from 300"),
        ("modbus-rtu:///dev/ttyUSB0?parity=M", "parity must be N, E or O, not 'M'"),
        ("modbus-rtu://dev/ttyUSB0", "three slashes"),
        ("serial:dev/ttyS1", "three slashes"),
        ("serial:///dev/ttyS1?bytesize=9", "bytesize must be 7 or 8, not '9'"),
        ("serial:///dev/ttyS1?stopbits=1.5", "stopbits must be 1 or 2, not '1.5'"),
        ("osdp:///dev/ttyUSB1?address=127", "address must be a whole number from 0 to 126"),
        ("osdp:///dev/ttyUSB1?baud=4800", "baud must be 9600, 19200, 38400, 57600, 115200"),
        ("ble://AA:BB:CC:DD:EE", "expected ble://AA:BB:CC:DD:EE:FF"),
        ("ble://AA:BB:CC:DD:EE:FF/1", "expected ble://AA:BB:CC:DD:EE:FF"),
        ("zigbee://0x1234", "unknown scheme 'zigbee'"),
    ],
)
def test_malformed_address_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(AddressError, match=re.escape(problem)):
        parse_address(url)


def test_listening_address_may_ask_for_any_port_but_must_give_one() -> None:
    assert parse_address("modbus-tcp://127.0.0.1:0", listening=True).port == 0
    with pytest.raises(AddressError, match="give the port to serve on"):
        parse_address("modbus-tcp://127.0.0.1", listening=True)
    with pytest.raises(AddressError, match="unit must be a whole number from 1 to 247"):
        parse_address("modbus-rtu:///dev/pts/3?unit=0", listening=True)
    assert parse_address("modbus-tcp://127.0.0.1:502?unit=0").unit == 0
