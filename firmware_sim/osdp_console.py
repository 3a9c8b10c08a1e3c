"""OSDP readers on a pseudo-terminal from the command line (``anju sim readers``).

Serves a :class:`~firmware_sim.osdp_readers.ReaderLine` on one pty end, optionally plays
a scenario on each reader in turn every few seconds, and prints what it does and what
the panel commands (LED, buzzer, output). Secure-channel keys come from a file of
``address=hex`` lines, never from the command line, and are never printed.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import osdp

from firmware_sim.osdp_readers import ReaderLine, SimReader, wiegand26

__all__ = ["SCENARIOS", "load_keys", "main", "parse_addresses"]

SCENARIOS: Final = ("grant", "deny", "forced", "tailgate")
_MAX_ADDRESS: Final = 126
_KEY_HEX: Final = 32
_WATCH_S: Final = 0.2
_FACILITY: Final = 17
_COMMAND_NAMES: Final = {
    value: name for name, value in vars(osdp.Command).items() if not name.startswith("_")
}


def parse_addresses(text: str) -> list[int]:
    """Reader addresses from ``0-15`` or ``1,3,5-7``: sorted, without repeats.

    Raises ValueError naming the part that is not an address or range within 0-126.
    """
    addresses: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if sep else low)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not an address or a range like 0-15") from None
        if not 0 <= first <= last <= _MAX_ADDRESS:
            raise ValueError(f"{part.strip()!r}: addresses are 0-{_MAX_ADDRESS}, low to high")
        addresses.update(range(first, last + 1))
    return sorted(addresses)


def load_keys(path: Path) -> dict[int, bytes]:
    """Secure-channel keys from a file of ``address=hex`` lines (# starts a comment).

    Raises ValueError naming the file, the line and the fix; the key's text is never
    part of the message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the key file ({exc.strerror})") from None
    keys: dict[int, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}, line {number}"
        address_text, sep, key_text = line.partition("=")
        try:
            address = int(address_text.strip())
        except ValueError:
            raise ValueError(f"{where}: write ADDRESS=KEY, as in 1=<32 hex digits>") from None
        key_text = key_text.strip()
        if not sep or not 0 <= address <= _MAX_ADDRESS:
            raise ValueError(f"{where}: write ADDRESS=KEY with an address 0-{_MAX_ADDRESS}")
        try:
            key = bytes.fromhex(key_text)
        except ValueError:
            key = b""
        if len(key_text) != _KEY_HEX or len(key) * 2 != _KEY_HEX:
            raise ValueError(f"{where}: the key of reader {address} must be {_KEY_HEX} hex digits")
        if address in keys:
            raise ValueError(f"{where}: reader {address} has a key already")
        keys[address] = key
    return keys


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OSDP door readers on one pseudo-terminal, paced at the line's baud rate.",
    )
    parser.add_argument("--path", required=True, help="The pty end to serve (socat link).")
    parser.add_argument("--baud", type=int, default=9600, help="Line speed (default 9600).")
    parser.add_argument("--addresses", default="1", help="Reader addresses: 0-15 or 1,3,5-7.")
    parser.add_argument("--scbk-file", type=Path, help="Secure-channel keys, ADDRESS=HEX per line.")
    parser.add_argument("--scenario", choices=SCENARIOS, help="Play it on each reader in turn.")
    parser.add_argument(
        "--every", type=float, default=5.0, help="Seconds between scenarios (default 5)."
    )
    parser.add_argument("--duration", type=float, help="Stop after this many seconds.")
    return parser


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _card(address: int) -> tuple[int, str]:
    card = 1000 + address
    return wiegand26(_FACILITY, card), f"card {_FACILITY}:{card}"


def _play(line: ReaderLine, scenario: str, address: int) -> str:
    """Start ``scenario`` on ``address``; what it does, in words."""
    number, card = _card(address)
    if scenario == "grant":
        line.grant(address, number)
        return f"{card} granted, the door opens for 2 s"
    if scenario == "deny":
        line.deny(address, number)
        return f"{card} refused"
    if scenario == "forced":
        line.force_door(address)
        return "the door forced open for 2 s (no release)"
    line.tailgate(address, number)
    return f"{card} granted, the door opens twice on it"


def _describe(command: Mapping[str, object]) -> str:
    name = _COMMAND_NAMES.get(command.get("command"), str(command.get("command")))
    details = ", ".join(f"{k} {v}" for k, v in command.items() if k != "command")
    return f"{name} ({details})" if details else name


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m firmware_sim.osdp_console"
) -> int:
    """Serve the readers until SIGINT, SIGTERM or ``--duration``; 0 on a clean stop,
    2 on a bad option, 1 if the pty cannot be opened or goes away."""
    parser = _parser(prog)
    options = parser.parse_args(argv)
    try:
        addresses = parse_addresses(options.addresses)
        keys = load_keys(options.scbk_file) if options.scbk_file else {}
        unknown = sorted(set(keys) - set(addresses))
        if unknown:
            raise ValueError(f"{options.scbk_file}: keys for readers not served: {unknown}")
        if options.every <= 0:
            raise ValueError("--every must be > 0")
        line = ReaderLine(
            options.path,
            options.baud,
            [SimReader(address, scbk=keys.get(address)) for address in addresses],
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        line.start()
    except OSError as exc:
        print(f"error: cannot open {options.path}: {exc.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lost = False
    try:
        secure = [a for a in addresses if a in keys]
        print(
            f"serving {len(addresses)} OSDP readers on {options.path} at {options.baud} baud, "
            f"addresses {options.addresses}; secure channel for "
            f"{', '.join(map(str, secure)) if secure else 'none'}",
            flush=True,
        )
        lost = _watch(line, options, addresses, stop)
    except KeyboardInterrupt:
        pass
    finally:
        line.stop()
        signal.signal(signal.SIGTERM, previous)
    print("stopped", flush=True)
    return 1 if lost else 0


def _watch(
    line: ReaderLine, options: argparse.Namespace, addresses: Sequence[int], stop: threading.Event
) -> bool:
    """Play the scenario in turn and print the panel's commands until stopped; True if
    the line went away (the pty closed) rather than being stopped."""
    started = time.monotonic()
    turn = itertools.cycle(addresses)
    next_play = started + 1.0
    seen = dict.fromkeys(addresses, 0)
    while not stop.wait(_WATCH_S):
        now = time.monotonic()
        if options.duration is not None and now >= started + options.duration:
            return False
        if not line.running:
            print(f"error: the line on {options.path} went away", file=sys.stderr, flush=True)
            return True
        if options.scenario and now >= next_play:
            address = next(turn)
            print(
                f"{_stamp()}  reader {address}: {_play(line, options.scenario, address)}",
                flush=True,
            )
            next_play = now + options.every
        for address in addresses:
            commands = line.commands(address)
            for command in commands[seen[address] :]:
                print(f"{_stamp()}  reader {address}: panel sent {_describe(command)}", flush=True)
            seen[address] = len(commands)
    return False


if __name__ == "__main__":
    sys.exit(main())
