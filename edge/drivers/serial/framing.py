"""Records cut from a serial byte stream, as a profile's ``serial.framing`` declares.

Sans-IO: no ports, no asyncio. A reader is fed whatever bytes a read returned and
hands back the records and faults those bytes complete. Its guarantees:

- any chunking of one byte stream gives the same records and the same faults, in the
  same order, so what a gateway counts does not depend on how the OS split a read;
- ``feed`` never raises: garbage, partial, overlong and corrupt frames become
  ``FrameFault``s and the reader resynchronises on the next frame (the next start,
  or the next line terminator in the line modes);
- bytes outside any frame are one ``noise`` fault per run (and per
  ``max_frame_bytes`` of a longer run), not one per byte or per read;
- a binary frame with a bad checksum or an impossible length is skipped one byte past
  its start, so a real frame behind a false start is still found; bytes already
  reported as part of a bad frame are not reported again as noise;
- ``expire``, called when the line has gone quiet, ends what is pending: a binary frame
  whose length or end bytes never came is a false start, skipped one byte past its
  start so the frames it held back are read. Time is the caller's (the bus knows the
  baud); ``feed`` alone stays independent of how the stream was chunked.

A record is a ``FrameFault`` instead, never a ``Record``, when its checksum is wrong,
it is too long, its type is not in the profile or its fields do not fit the layout.
A record's float is always finite: a binary NaN or infinity refuses the record, and
text that would read as one stays text.
"""

import json
import math
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from edge.drivers.serial.checksums import CHECKSUMS, Checksum, xor8
from schemas.protocols.serial import (
    BinaryFraming,
    BinaryRecord,
    CodeType,
    FieldsFraming,
    FieldType,
    JsonFraming,
    KeyValueFraming,
    RegexFraming,
    SerialSettings,
)

Value = int | float | bool | str
"""A field's value: text fields read as numbers where they are one."""

FaultKind = Literal["noise", "checksum", "truncated", "malformed", "unknown_record"]

_KEPT: Final = 64
"""Bytes of an offending frame a fault keeps, enough to show a person what arrived."""


@dataclass(frozen=True, slots=True)
class Record:
    """One frame the profile lays out: its type, its fields by name, its bytes."""

    type: str
    fields: Mapping[str, Value]
    raw: bytes


@dataclass(frozen=True, slots=True)
class FrameFault:
    """Bytes the reader skipped, why (for a person), and at most 64 of them."""

    kind: FaultKind
    reason: str
    raw: bytes


Item = Record | FrameFault


def _fault(kind: FaultKind, reason: str, raw: bytes | bytearray) -> FrameFault:
    return FrameFault(kind, reason, bytes(raw[:_KEPT]))


class _NoiseRun:
    """Bytes outside any frame, reported as one fault when the run ends or fills up.

    The run ends where a frame begins; a run of ``limit`` bytes is reported at once so
    a device sending only garbage is still seen, at positions fixed by the stream
    alone and not by how it was read.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._kept = bytearray()

    def add(self, data: bytes | bytearray, out: list[Item]) -> None:
        while data:
            take = min(len(data), self._limit - self._count)
            if len(self._kept) < _KEPT:
                self._kept += data[: min(take, _KEPT - len(self._kept))]
            self._count += take
            data = data[take:]
            if self._count == self._limit:
                self.flush(out)

    def flush(self, out: list[Item]) -> None:
        if self._count:
            out.append(_fault("noise", f"{self._count} bytes outside any frame", self._kept))
            self._count = 0
            self._kept = bytearray()


class FrameReader(ABC):
    """Cuts one device's byte stream into records, as its profile frames them."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._noise = _NoiseRun(max_frame_bytes)

    def feed(self, data: bytes) -> list[Record | FrameFault]:
        """The records and faults ``data`` completes, in stream order.

        Any chunking of the byte stream gives the same records and faults; never raises.
        """
        self._buffer += data
        out: list[Item] = []
        del self._buffer[: self._cut(out)]
        return out

    def expire(self) -> list[Record | FrameFault]:
        """The line went quiet: what the bytes pending since the last read complete now.

        A text framing ends a frame at its terminator or at the next start, never at a
        pause (a slow writer's line is not cut), so here only the noise run so far is
        reported. Never raises; with nothing pending it returns nothing.
        """
        out: list[Item] = []
        self._noise.flush(out)
        return out

    def reset(self) -> list[FrameFault]:
        """Forget a partial frame (the port was closed and reopened).

        Returns what was forgotten, so it can be counted: the pending noise and the
        partial frame (``truncated``), in stream order; empty when nothing was pending.
        """
        out: list[Item] = []
        self._forget(bytes(self._buffer), out)
        self._noise.flush(out)
        self._buffer.clear()
        return [item for item in out if isinstance(item, FrameFault)]

    def _put(self, item: Item, out: list[Item]) -> None:
        """Append a frame's outcome after the noise that came before it."""
        self._noise.flush(out)
        out.append(item)

    @abstractmethod
    def _cut(self, out: list[Item]) -> int:
        """Append what the buffer completes to ``out``; return how many bytes it used."""

    @abstractmethod
    def _forget(self, pending: bytes, out: list[Item]) -> None:
        """Report the bytes ``_cut`` left in the buffer, and clear the reader's state."""


# --- text -------------------------------------------------------------------------

_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_HEX2: Final = re.compile(rb"[0-9A-Fa-f]{2}")


class _TextLayouts:
    """Field names per record type, and which fields stay text."""

    def __init__(self, settings: SerialSettings) -> None:
        self.records: dict[str, tuple[str, ...]] = {}
        for record, layout in settings.records.items():
            if isinstance(layout, BinaryRecord):
                raise ValueError(f"records.{record}: a text framing takes a list of field names")
            self.records[record] = tuple(layout)
        self._text = frozenset(settings.text_fields)

    def value(self, name: str, text: str) -> Value:
        """``text`` as an int or float when it is an integer or a decimal, else as is."""
        if name in self._text or _NUMBER.fullmatch(text) is None:
            return text
        try:
            number = float(text) if "." in text else int(text)
        except ValueError:  # more digits than int() takes
            return text
        return number if math.isfinite(number) else text

    def unknown(self, record: str, raw: bytes) -> FrameFault:
        return _fault("unknown_record", f"record type {record!r} is not in the profile", raw)


class _FieldsReader(FrameReader):
    """``$TYPE,f1,f2*CS\\r\\n``: a start character anywhere begins a new frame."""

    def __init__(self, framing: FieldsFraming, layouts: _TextLayouts) -> None:
        super().__init__(framing.max_frame_bytes)
        self._start = framing.start.encode()
        self._separator = framing.separator
        self._terminator = framing.terminator.encode()
        self._checksum = framing.checksum == "xor8"
        self._layouts = layouts
        self._dropping = False
        """After a frame too long: its bytes run to the next start and are not noise."""

    def _cut(self, out: list[Item]) -> int:
        buffer, start, terminator = self._buffer, self._start, self._terminator
        pos = 0
        while True:
            at = buffer.find(start, pos)
            if at < 0:
                held = max(pos, len(buffer) - len(start) + 1)
                self._skip(buffer[pos:held], out)
                return held
            self._skip(buffer[pos:at], out)
            self._noise.flush(out)
            self._dropping = False
            body = at + len(start)
            # The frame ends at whichever the stream shows first: its terminator, a new
            # start, or max_frame_bytes without either. Ties go in that order, so the
            # outcome depends on the bytes alone, never on where a read ended.
            end = buffer.find(terminator, body)
            restart = buffer.find(start, body)
            events = [(at + self._max, 2)]
            if end >= 0:
                events.append((end + len(terminator), 0))
            if restart >= 0:
                events.append((restart + len(start), 1))
            seen, event = min(events)
            if seen > len(buffer):
                return at
            if event == 0:
                self._put(self._parse(bytes(buffer[at:seen])), out)
                pos = seen
            elif event == 1:
                reason = "frame cut short by the start of another"
                self._put(_fault("truncated", reason, buffer[at:restart]), out)
                pos = restart
            else:
                reason = f"no terminator within {self._max} bytes"
                self._put(_fault("truncated", reason, buffer[at:seen]), out)
                self._dropping = True
                pos = seen - len(start) + 1

    def _skip(self, data: bytearray, out: list[Item]) -> None:
        if not self._dropping:
            self._noise.add(data, out)

    def _parse(self, frame: bytes) -> Item:
        body = frame[len(self._start) : -len(self._terminator)]
        if self._checksum:
            star = body.rfind(b"*")
            given = body[star + 1 :]
            if star < 0 or _HEX2.fullmatch(given) is None:
                return _fault("malformed", "no *HH checksum before the terminator", frame)
            body = body[:star]
            computed = xor8(body)
            if int(given, 16) != computed:
                reason = f"checksum {given.decode()}, computed {computed:02X}"
                return _fault("checksum", reason, frame)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return _fault("malformed", "not UTF-8 text", frame)
        record, *values = text.split(self._separator)
        layout = self._layouts.records.get(record)
        if layout is None:
            return self._layouts.unknown(record, frame)
        if len(values) != len(layout):
            reason = f"{record} has {len(values)} fields, the profile lays out {len(layout)}"
            return _fault("malformed", reason, frame)
        fields = {
            name: self._layouts.value(name, v) for name, v in zip(layout, values, strict=True)
        }
        return Record(record, fields, frame)

    def _forget(self, pending: bytes, out: list[Item]) -> None:
        if pending.startswith(self._start):
            self._put(_fault("truncated", "frame cut short: the port was reset", pending), out)
        else:
            self._skip(bytearray(pending), out)
        self._dropping = False


class _LineReader(FrameReader):
    """Lines up to a terminator; blank lines are ignored, a too-long line is one fault."""

    def __init__(self, terminator: str, max_frame_bytes: int, layouts: _TextLayouts) -> None:
        super().__init__(max_frame_bytes)
        self._terminator = terminator.encode()
        self._strip_cr = terminator == "\n"
        self._layouts = layouts
        self._skipping = False
        """After a line too long: the rest of it, up to its terminator, is dropped."""

    def _cut(self, out: list[Item]) -> int:
        buffer, terminator = self._buffer, self._terminator
        pos = 0
        while True:
            at = buffer.find(terminator, pos)
            if self._skipping:
                if at < 0:
                    return max(pos, len(buffer) - len(terminator) + 1)
                self._skipping = False
                pos = at + len(terminator)
                continue
            if at >= 0 and at + len(terminator) - pos <= self._max:
                frame = bytes(buffer[pos : at + len(terminator)])
                line = frame[: -len(terminator)]
                pos = at + len(terminator)
                if self._strip_cr and line.endswith(b"\r"):
                    line = line[:-1]
                if line.strip():
                    out.append(self._parse(line, frame))
                continue
            if len(buffer) - pos < self._max:
                return pos
            reason = f"no terminator within {self._max} bytes"
            out.append(_fault("truncated", reason, buffer[pos : pos + self._max]))
            self._skipping = True
            pos += self._max - len(terminator) + 1

    def _forget(self, pending: bytes, out: list[Item]) -> None:
        if pending.strip() and not self._skipping:
            out.append(_fault("truncated", "line cut short: the port was reset", pending))
        self._skipping = False

    def _parse(self, line: bytes, frame: bytes) -> Item:
        try:
            text = line.decode()
        except UnicodeDecodeError:
            return _fault("malformed", "not UTF-8 text", frame)
        return self._parse_text(text, frame)

    @abstractmethod
    def _parse_text(self, text: str, frame: bytes) -> Item: ...

    def _record(self, record: str, found: Mapping[str, str], frame: bytes) -> Item:
        """The record of type ``record`` from the values ``found`` by field name."""
        layout = self._layouts.records.get(record)
        if layout is None:
            return self._layouts.unknown(record, frame)
        missing = [name for name in layout if name not in found]
        if missing:
            return _fault("malformed", f"{record} has no {missing[0]!r}", frame)
        return Record(
            record, {name: self._layouts.value(name, found[name]) for name in layout}, frame
        )


class _RegexReader(_LineReader):
    def __init__(self, framing: RegexFraming, layouts: _TextLayouts) -> None:
        super().__init__(framing.terminator, framing.max_frame_bytes, layouts)
        self._pattern = re.compile(framing.pattern)
        self._fixed = framing.record

    def _parse_text(self, text: str, frame: bytes) -> Item:
        match = self._pattern.fullmatch(text)
        if match is None:
            return _fault("malformed", "line does not match the pattern", frame)
        groups = {name: value or "" for name, value in match.groupdict().items()}
        return self._record(self._fixed or groups["type"], groups, frame)


class _KeyValueReader(_LineReader):
    def __init__(self, framing: KeyValueFraming, layouts: _TextLayouts) -> None:
        super().__init__(framing.terminator, framing.max_frame_bytes, layouts)
        self._separator = framing.separator
        self._assign = framing.assign
        self._type_key = framing.type_key
        self._fixed = framing.record

    def _parse_text(self, text: str, frame: bytes) -> Item:
        pairs: dict[str, str] = {}
        for pair in text.split(self._separator):
            if not pair.strip():
                continue
            key, assign, value = pair.partition(self._assign)
            if not assign:
                return _fault("malformed", f"{pair.strip()!r} is not key{self._assign}value", frame)
            pairs[key.strip()] = value.strip()
        return self._typed_record(pairs, frame)

    def _typed_record(self, found: Mapping[str, str], frame: bytes) -> Item:
        if self._fixed is not None:
            return self._record(self._fixed, found, frame)
        assert self._type_key is not None  # the framing gives one or the other
        record = found.get(self._type_key)
        if record is None:
            return _fault("malformed", f"no {self._type_key!r} to say the record type", frame)
        return self._record(record, found, frame)


class _JsonReader(_LineReader):
    def __init__(self, framing: JsonFraming, layouts: _TextLayouts) -> None:
        super().__init__(framing.terminator, framing.max_frame_bytes, layouts)
        self._type_key = framing.type_key
        self._fixed = framing.record

    def _parse_text(self, text: str, frame: bytes) -> Item:
        try:
            document = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return _fault("malformed", "not a JSON document", frame)
        if not isinstance(document, dict):
            return _fault("malformed", "not a JSON object", frame)
        if self._fixed is not None:
            record = self._fixed
        else:
            assert self._type_key is not None  # the framing gives one or the other
            found = document.get(self._type_key)
            if not isinstance(found, str):
                return _fault(
                    "malformed", f"no text {self._type_key!r} to say the record type", frame
                )
            record = found
        layout = self._layouts.records.get(record)
        if layout is None:
            return self._layouts.unknown(record, frame)
        fields: dict[str, Value] = {}
        for name in layout:
            value = document.get(name)
            if isinstance(value, str):
                fields[name] = self._layouts.value(name, value)
            elif isinstance(value, bool | int) or (
                isinstance(value, float) and math.isfinite(value)
            ):
                fields[name] = value
            else:
                problem = "no" if name not in document else f"a {type(value).__name__} for"
                return _fault("malformed", f"{record} has {problem} {name!r}", frame)
        return Record(record, fields, frame)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


# --- binary -----------------------------------------------------------------------

_ORDER: Final[dict[CodeType, Literal["big", "little"]]] = {
    CodeType.U8: "big",
    CodeType.U16LE: "little",
    CodeType.U16BE: "big",
}
_WIDTH: Final = {CodeType.U8: 1, CodeType.U16LE: 2, CodeType.U16BE: 2}

_FORMATS: Final = {
    FieldType.U8: struct.Struct("B"),
    FieldType.S8: struct.Struct("b"),
    FieldType.U16LE: struct.Struct("<H"),
    FieldType.U16BE: struct.Struct(">H"),
    FieldType.S16LE: struct.Struct("<h"),
    FieldType.S16BE: struct.Struct(">h"),
    FieldType.U32LE: struct.Struct("<I"),
    FieldType.U32BE: struct.Struct(">I"),
    FieldType.S32LE: struct.Struct("<i"),
    FieldType.S32BE: struct.Struct(">i"),
    FieldType.F32LE: struct.Struct("<f"),
    FieldType.F32BE: struct.Struct(">f"),
    FieldType.BOOL: struct.Struct("B"),
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    offset: int
    format: struct.Struct
    mask: int | None
    """For bool: the bits that make it true."""

    def read(self, frame: bytes) -> Value:
        value: int | float = self.format.unpack_from(frame, self.offset)[0]
        if self.mask is not None:
            return bool(int(value) & self.mask)
        return value


@dataclass(frozen=True, slots=True)
class _Layout:
    record: str
    fields: tuple[_Field, ...]
    needs: int
    """Bytes the frame must have before its checksum to hold every field."""


def _layout(record: str, layout: BinaryRecord) -> _Layout:
    fields = tuple(
        _Field(
            name,
            field.offset,
            _FORMATS[field.type],
            (0xFF if field.bit is None else 1 << field.bit)
            if field.type is FieldType.BOOL
            else None,
        )
        for name, field in layout.fields.items()
    )
    return _Layout(record, fields, max(f.offset + f.format.size for f in fields))


@dataclass(frozen=True, slots=True)
class _Bad:
    """A candidate frame that is not one: its fault and how far its bytes reach."""

    kind: FaultKind
    reason: str
    reach: int


class _BinaryReader(FrameReader):
    """Frames from start bytes to end bytes or a length prefix, with typed fields."""

    def __init__(self, framing: BinaryFraming, settings: SerialSettings) -> None:
        super().__init__(framing.max_frame_bytes)
        self._start = framing.start_bytes
        self._end = framing.end_bytes
        self._length = framing.length
        self._checksum: Checksum | None = (
            None if framing.checksum == "none" else CHECKSUMS[framing.checksum]
        )
        width = self._checksum.width if self._checksum else 0
        self._tail = width + len(self._end)
        """Bytes after the payload: the checksum, then the end bytes."""
        self._checksum_from = (
            len(self._start) if framing.checksum_from is None else framing.checksum_from
        )
        self._checksum_order = framing.checksum_order or (
            self._checksum.byte_order if self._checksum else "big"
        )
        self._code = framing.type_code
        layouts = []
        for record, layout in settings.records.items():
            if not isinstance(layout, BinaryRecord):
                raise ValueError(f"records.{record}: a binary framing takes a code and fields")
            layouts.append((layout.code, _layout(record, layout)))
        self._by_code = {code: layout for code, layout in layouts}
        self._only = layouts[0][1] if len(layouts) == 1 and self._code is None else None
        length_end = self._length.offset + _WIDTH[self._length.type] if self._length else 0
        code_end = self._code.offset + _WIDTH[self._code.type] if self._code else 0
        covered_from = self._checksum_from if self._checksum else 0
        self._min_frame = max(len(self._start), covered_from, length_end, code_end) + self._tail
        counts = self._length.counts if self._length else "frame"
        self._uncounted = {"frame": 0, "rest": length_end, "payload": length_end + self._tail}[
            counts
        ]
        """Bytes of a frame its length field does not count."""
        self._quiet = 0
        """Bytes from the buffer's start already reported within a bad frame."""

    def _cut(self, out: list[Item]) -> int:
        buffer, start = self._buffer, self._start
        pos = 0
        while True:
            at = buffer.find(start, pos)
            if at < 0:
                held = max(pos, len(buffer) - len(start) + 1)
                self._skip(pos, held, out)
                pos = held
                break
            self._skip(pos, at, out)
            self._noise.flush(out)
            end = self._measure(at)
            if end is None:
                pos = at
                break
            if isinstance(end, int):
                frame = bytes(buffer[at:end])
                checked = self._check(frame, end)
                if checked is None:
                    self._put(self._parse(frame), out)
                    pos = end
                    continue
                end = checked
            if at >= self._quiet:
                self._put(_fault(end.kind, end.reason, buffer[at : end.reach]), out)
            self._quiet = max(self._quiet, end.reach)
            pos = at + 1
        self._quiet = max(0, self._quiet - pos)
        return pos

    def expire(self) -> list[Record | FrameFault]:
        """The line went quiet, so no frame pending in the buffer will be completed.

        Each pending start is a false one: reported as ``truncated`` (its bytes up to
        the next start), skipped one byte past, and the rest hunted again, so the
        frames it held back are returned, in stream order. Bytes left are noise. Never
        raises; afterwards nothing is pending.
        """
        out: list[Item] = []
        buffer, start = self._buffer, self._start
        while buffer.startswith(start):
            restart = buffer.find(start, 1)
            reach = len(buffer) if restart < 0 else restart
            if self._quiet == 0:
                self._put(_fault("truncated", self._went_quiet(), buffer[:reach]), out)
            self._quiet = max(self._quiet, reach) - 1
            del buffer[:1]
            del buffer[: self._cut(out)]
        self._skip(0, len(buffer), out)
        buffer.clear()
        self._quiet = 0
        self._noise.flush(out)
        return out

    def _went_quiet(self) -> str:
        """Why the frame pending at the buffer's start is cut short."""
        arrived = len(self._buffer)
        length = self._length
        if length is not None and arrived >= length.offset + _WIDTH[length.type]:
            field = self._buffer[length.offset : length.offset + _WIDTH[length.type]]
            size = int.from_bytes(field, _ORDER[length.type]) + self._uncounted
            return f"the line went quiet after {arrived} bytes of a {size}-byte frame"
        return f"the line went quiet after {arrived} bytes, before the frame's end"

    def _skip(self, begin: int, end: int, out: list[Item]) -> None:
        """Noise between frames, less what a bad frame's fault already reported."""
        begin = max(begin, self._quiet)
        if begin < end:
            self._noise.add(self._buffer[begin:end], out)

    def _measure(self, at: int) -> int | _Bad | None:
        """Where the frame starting at ``at`` ends; None until the buffer says."""
        buffer, available = self._buffer, len(self._buffer) - at
        if self._length is not None:
            field_end = self._length.offset + _WIDTH[self._length.type]
            if available < field_end:
                return None
            length = int.from_bytes(
                buffer[at + self._length.offset : at + field_end], _ORDER[self._length.type]
            )
            size = length + self._uncounted
            if not self._min_frame <= size <= self._max:
                limits = f"{self._min_frame}-{self._max}"
                reason = f"length {length} makes a {size}-byte frame, outside {limits}"
                return _Bad("malformed", reason, at + field_end)
            if available < size:
                return None
            if self._end and buffer[at + size - len(self._end) : at + size] != self._end:
                return _Bad("malformed", "no end bytes where the length says", at + size)
            return at + size
        found = buffer.find(self._end, at + self._min_frame - len(self._end))
        if found >= 0 and found + len(self._end) - at <= self._max:
            return found + len(self._end)
        if found < 0 and available < self._max:
            return None
        return _Bad("truncated", f"no end bytes within {self._max} bytes", at + self._max)

    def _check(self, frame: bytes, end: int) -> _Bad | None:
        """A bad checksum's fault, or None when the frame's checksum holds (or it has none).

        ``end`` is where the frame ends in the buffer, the reach of its fault.
        """
        checksum = self._checksum
        if checksum is None:
            return None
        at = len(frame) - self._tail
        given = int.from_bytes(frame[at : at + checksum.width], self._checksum_order)
        computed = checksum.compute(frame[self._checksum_from : at])
        if given == computed:
            return None
        digits = 2 * checksum.width
        reason = f"checksum {given:0{digits}X}, computed {computed:0{digits}X}"
        return _Bad("checksum", reason, end)

    def _parse(self, frame: bytes) -> Item:
        layout = self._only
        if self._code is not None:
            offset, width = self._code.offset, _WIDTH[self._code.type]
            code = int.from_bytes(frame[offset : offset + width], _ORDER[self._code.type])
            layout = self._by_code.get(code)
            if layout is None:
                return _fault(
                    "unknown_record", f"type code 0x{code:02X} is not in the profile", frame
                )
        assert layout is not None  # one record, or a code for each (SerialSettings)
        payload = len(frame) - self._tail
        if payload < layout.needs:
            reason = (
                f"{layout.record} needs {layout.needs} bytes before the checksum, "
                f"the frame has {payload}"
            )
            return _fault("malformed", reason, frame)
        fields = {f.name: f.read(frame) for f in layout.fields}
        for name, value in fields.items():
            if isinstance(value, float) and not math.isfinite(value):
                return _fault("malformed", f"{layout.record} {name} is {value}", frame)
        return Record(layout.record, fields, frame)

    def _forget(self, pending: bytes, out: list[Item]) -> None:
        if pending.startswith(self._start) and self._quiet == 0:
            self._put(_fault("truncated", "frame cut short: the port was reset", pending), out)
        elif not pending.startswith(self._start):
            self._skip(0, len(pending), out)
        self._quiet = 0


def reader_for(settings: SerialSettings) -> FrameReader:
    """A fresh reader for the framing and records of a profile's ``serial`` settings."""
    framing = settings.framing
    if isinstance(framing, BinaryFraming):
        return _BinaryReader(framing, settings)
    layouts = _TextLayouts(settings)
    if isinstance(framing, FieldsFraming):
        return _FieldsReader(framing, layouts)
    if isinstance(framing, RegexFraming):
        return _RegexReader(framing, layouts)
    if isinstance(framing, KeyValueFraming):
        return _KeyValueReader(framing, layouts)
    return _JsonReader(framing, layouts)
