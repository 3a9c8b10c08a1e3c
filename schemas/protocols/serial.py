"""Serial addressing: a point is one field of a record a device pushes over its line.

The settings are required because they hold the framing and the record layouts: a
point names a record type and a field, and only the settings say how records are
cut from the byte stream and where that field sits in one. ``framing.mode`` picks
how (docs/serial-framing.md):

- ``fields`` (the default): NMEA-like lines, ``$TYPE,f1,f2*CS\\r\\n``;
- ``regex``: text lines matched by a pattern with named groups;
- ``keyvalue``: text lines of ``key=value`` pairs;
- ``json``: one JSON object per line;
- ``binary``: frames between start bytes and end bytes or a length prefix, with
  typed fields at byte offsets.

Text modes lay a record out as a list of field names; binary mode as a type code
and typed fields at offsets. Errors name the path (``serial.framing.binary.length``,
``serial.records.STATUS``); the tag after ``framing`` or a record is the kind of
framing or layout that was being read.
"""

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from schemas.addressing import Addressing, register
from schemas.strict import Name, Strict

if TYPE_CHECKING:
    from schemas.profile import DeviceProfile

RecordType = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")]
"""A record type as the device writes it (``PCNT``, ``alarm``), or a binary record's label."""

HexBytes = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Fa-f]{2}( ?[0-9A-Fa-f]{2}){0,7}$",
        description='One to eight bytes in hex, quoted in YAML: "AA 55".',
    ),
]

MaxFrameBytes = Annotated[
    int,
    Field(
        ge=16,
        le=65536,
        description="A frame (or line, terminator included) longer than this is dropped "
        "as one fault, and the reader looks for the next one.",
    ),
]

Terminator = Annotated[str, Field(min_length=1, max_length=4)]


class SerialAddress(Strict):
    """Where a point lives in a serial record: the record type and the field name."""

    record: RecordType
    field: Name


class FieldsFraming(Strict):
    """An NMEA-like line: ``{start}{TYPE}{separator}{field}...[*{checksum}]{terminator}``.

    The xor8 checksum is two hex digits after ``*``: the XOR of every byte between the
    start and the ``*``. A start character inside a line begins a new frame.
    """

    mode: Literal["fields"] = "fields"
    start: Annotated[str, Field(min_length=1, max_length=4)] = "$"
    separator: Annotated[str, Field(min_length=1, max_length=4)] = ","
    terminator: Terminator = "\r\n"
    checksum: Literal["none", "xor8"] = "xor8"
    max_frame_bytes: MaxFrameBytes = 512

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.start in self.terminator or self.terminator in self.start:
            raise ValueError("start and terminator must not contain each other")
        if self.separator in (self.start, self.terminator):
            raise ValueError("separator must differ from start and terminator")
        return self


class RegexFraming(Strict):
    """Text lines, each matched whole by ``pattern``; fields come from its named groups.

    The record type is the group named ``type``, or ``record`` for a device that sends
    one kind of line. A trailing carriage return is dropped when the terminator is
    ``\\n``, and blank lines are ignored.
    """

    mode: Literal["regex"]
    pattern: str = Field(
        description=r"A Python regular expression with named groups: "
        r"'(?P<type>ZONE|ARM) (?P<zone>\d+) (?P<state>\w+)'."
    )
    record: RecordType | None = Field(
        default=None, description="The record type of every line, when the pattern has no 'type'."
    )
    terminator: Terminator = "\n"
    max_frame_bytes: MaxFrameBytes = 512

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _one_type_source(self) -> Self:
        has_type = "type" in self.groups
        if has_type == (self.record is not None):
            raise ValueError("give the pattern a group named 'type' or give 'record', not both")
        return self

    @property
    def groups(self) -> frozenset[str]:
        """The pattern's named groups."""
        return frozenset(re.compile(self.pattern).groupindex)


class _KeyedLines(Strict):
    """Lines whose fields are found by key; the record type by ``type_key`` or ``record``."""

    type_key: str | None = Field(
        default=None, min_length=1, description="The key whose value is the record type."
    )
    record: RecordType | None = Field(
        default=None, description="The record type of every line, when no key says it."
    )
    terminator: Terminator = "\n"
    max_frame_bytes: MaxFrameBytes = 512

    @model_validator(mode="after")
    def _one_type_source(self) -> Self:
        if (self.type_key is None) == (self.record is None):
            raise ValueError("give 'type_key' or 'record', not both")
        return self


class KeyValueFraming(_KeyedLines):
    """Text lines of ``key=value`` pairs: ``ev=ALARM zone=007 state=open``.

    Keys a record does not lay out are ignored; a missing one refuses the line.
    """

    mode: Literal["keyvalue"]
    separator: str | None = Field(
        default=None, min_length=1, description="Between pairs; leave out for spaces or tabs."
    )
    assign: Annotated[str, Field(min_length=1)] = "="


class JsonFraming(_KeyedLines):
    """One JSON object per line: ``{"type": "alarm", "zone": "007", "open": true}``.

    Values keep their JSON types; keys a record does not lay out are ignored, and a
    missing key, or a value that is null, a list or an object, refuses the line.
    """

    mode: Literal["json"]


class CodeType(StrEnum):
    U8 = "u8"
    U16LE = "u16le"
    U16BE = "u16be"


class FieldType(StrEnum):
    U8 = "u8"
    S8 = "s8"
    U16LE = "u16le"
    U16BE = "u16be"
    S16LE = "s16le"
    S16BE = "s16be"
    U32LE = "u32le"
    U32BE = "u32be"
    S32LE = "s32le"
    S32BE = "s32be"
    F32LE = "f32le"
    F32BE = "f32be"
    BOOL = "bool"


class LengthPrefix(Strict):
    """The frame's length field: where it is, its type, and which bytes it counts."""

    offset: Annotated[int, Field(ge=1, le=255)] = Field(
        description="Its first byte, counted from the frame's first start byte."
    )
    type: CodeType = CodeType.U8
    counts: Literal["frame", "rest", "payload"] = Field(
        description="frame: every byte of the frame; rest: the bytes after the length "
        "field, checksum and end bytes included; payload: the bytes after the length "
        "field up to the checksum."
    )


class TypeCode(Strict):
    """The field that says which record a frame holds (each record's ``code``)."""

    offset: Annotated[int, Field(ge=0, le=255)]
    type: CodeType = CodeType.U8


class BinaryFraming(Strict):
    """Frames that begin with ``start`` and end with ``end`` or run to a length prefix.

    The checksum, if any, sits at the end of the frame, before the end bytes; it covers
    the bytes from ``checksum_from`` up to itself. Offsets count from the frame's first
    start byte. A frame with a bad checksum or an impossible length is skipped one byte
    at a time, so a real frame hidden behind a false start is still found, and so is a
    frame whose length or end bytes never come once the line goes quiet. A frame needs
    a checksum or end bytes (or both): with neither, noise passes for frames.
    """

    mode: Literal["binary"]
    start: HexBytes
    end: HexBytes | None = None
    length: LengthPrefix | None = None
    checksum: Literal["none", "xor8", "sum8", "crc16-modbus", "crc16-ccitt"]
    checksum_from: Annotated[int, Field(ge=0, le=255)] | None = Field(
        default=None,
        description="The first byte the checksum covers; the byte after the start bytes "
        "when left out.",
    )
    checksum_order: Literal["big", "little"] | None = Field(
        default=None,
        description="How a 16-bit checksum is sent; when left out, little for "
        "crc16-modbus (as Modbus RTU), big for crc16-ccitt.",
    )
    type_code: TypeCode | None = Field(
        default=None, description="Left out when the device sends one kind of frame."
    )
    max_frame_bytes: MaxFrameBytes = 512

    @model_validator(mode="after")
    def _frame_has_an_end(self) -> Self:
        if self.end is None and self.length is None:
            raise ValueError("give 'end' bytes, a 'length' prefix, or both")
        start = len(self.start_bytes)
        if self.length is not None and self.length.offset < start:
            raise ValueError(f"length.offset must be after the {start} start bytes")
        if self.checksum_order is not None and self.checksum not in ("crc16-modbus", "crc16-ccitt"):
            raise ValueError("checksum_order applies to the 16-bit checksums")
        if self.checksum == "none" and self.checksum_from is not None:
            raise ValueError("checksum_from needs a checksum")
        if self.checksum == "none" and self.end is None:
            # Any start byte in noise, then any length, would pass for a frame.
            raise ValueError(
                "a frame with neither a checksum nor end bytes cannot be told from noise: "
                "give the device's 'checksum', or its 'end' bytes"
            )
        return self

    @property
    def start_bytes(self) -> bytes:
        return bytes.fromhex(self.start)

    @property
    def end_bytes(self) -> bytes:
        return bytes.fromhex(self.end) if self.end is not None else b""


class BinaryField(Strict):
    """A typed value at a byte offset of the frame; ``bit`` takes one bit as a bool."""

    offset: Annotated[int, Field(ge=0, le=65535)]
    type: FieldType
    bit: Annotated[int, Field(ge=0, le=7)] | None = Field(
        default=None,
        description="For bool: the bit of the byte (0 is the lowest); any bit set when left out.",
    )

    @model_validator(mode="after")
    def _bit_is_for_bool(self) -> Self:
        if self.bit is not None and self.type is not FieldType.BOOL:
            raise ValueError(f"'bit' applies to type bool, not {self.type}")
        return self


class BinaryRecord(Strict):
    """A binary record: its type code (if the framing has one) and its fields by name."""

    code: Annotated[int, Field(ge=0, le=65535)] | None = None
    fields: Annotated[dict[Name, BinaryField], Field(min_length=1)]


def _framing_mode(value: Any) -> str | None:
    """The framing's mode; ``fields`` when a profile leaves it out, as profiles did before."""
    mode = value.get("mode", "fields") if isinstance(value, dict) else getattr(value, "mode", None)
    return mode if isinstance(mode, str) else None


def _layout_kind(value: Any) -> str:
    return "binary" if isinstance(value, dict | BinaryRecord) else "text"


Framing = Annotated[
    Annotated[FieldsFraming, Tag("fields")]
    | Annotated[RegexFraming, Tag("regex")]
    | Annotated[KeyValueFraming, Tag("keyvalue")]
    | Annotated[JsonFraming, Tag("json")]
    | Annotated[BinaryFraming, Tag("binary")],
    Discriminator(
        _framing_mode,
        custom_error_type="framing_mode",
        custom_error_message="framing.mode must be one of fields, regex, keyvalue, json, binary",
    ),
]

TextRecord = list[Name]
"""A text record's field names, in the order a ``fields`` line carries them."""

RecordLayout = Annotated[
    Annotated[TextRecord, Tag("text")] | Annotated[BinaryRecord, Tag("binary")],
    Discriminator(_layout_kind),
]


class SerialSettings(Strict):
    """How a serial device's records are framed and laid out."""

    baud: Annotated[int, Field(ge=300, le=4_000_000)] = Field(
        default=115200,
        description="The rate the device sends at; a 'baud=' in its address overrides it.",
    )
    framing: Framing = FieldsFraming()
    records: Annotated[dict[RecordType, RecordLayout], Field(min_length=1)] = Field(
        description="Each record type's layout: for text framings its field names (in "
        "order after the type for 'fields'); for binary, its code and typed fields."
    )
    text_fields: list[Name] = Field(
        default_factory=list,
        description="Text fields kept as text even when they read as numbers "
        '(a zone "007" stays "007"); other text fields become int or float when they '
        "are an integer or a decimal.",
    )

    @model_validator(mode="after")
    def _layouts_fit_framing(self) -> Self:
        framing = self.framing
        if isinstance(framing, BinaryFraming):
            self._check_binary(framing)
        else:
            self._check_text()
        if isinstance(framing, RegexFraming):
            for record, layout in self.records.items():
                missing = [n for n in self.field_names(layout) if n not in framing.groups]
                if missing:
                    raise ValueError(
                        f"records.{record}: the pattern has no group named {missing[0]!r}"
                    )
        if (
            isinstance(framing, RegexFraming | KeyValueFraming | JsonFraming)
            and framing.record is not None
            and framing.record not in self.records
        ):
            raise ValueError(f"framing.record: no record {framing.record} in records")
        return self

    def _check_text(self) -> None:
        for record, layout in self.records.items():
            if not isinstance(layout, list):
                raise ValueError(
                    f"records.{record}: a {self.framing.mode} framing lists a record's field "
                    "names; code and typed fields are for binary frames"
                )
            if len(set(layout)) != len(layout):
                raise ValueError(f"records.{record}: a field name appears twice")
        known = {name for layout in self.records.values() for name in self.field_names(layout)}
        unknown = [name for name in self.text_fields if name not in known]
        if unknown:
            raise ValueError(f"text_fields: no record has a field {unknown[0]!r}")

    def _check_binary(self, framing: BinaryFraming) -> None:
        if self.text_fields:
            raise ValueError("text_fields: binary fields are typed by their layout")
        codes: dict[int, str] = {}
        for record, layout in self.records.items():
            if not isinstance(layout, BinaryRecord):
                raise ValueError(
                    f"records.{record}: a binary framing lays a record out as "
                    "{code, fields: {name: {offset, type}}}, not a list of names"
                )
            if framing.type_code is None:
                if len(self.records) > 1:
                    raise ValueError(
                        f"records.{record}: several records need framing.type_code to tell "
                        "them apart"
                    )
                if layout.code is not None:
                    raise ValueError(f"records.{record}: code needs framing.type_code")
                continue
            if layout.code is None:
                raise ValueError(f"records.{record}: give its code (framing.type_code is set)")
            if framing.type_code.type is CodeType.U8 and layout.code > 0xFF:
                raise ValueError(f"records.{record}: code {layout.code} does not fit a u8")
            if layout.code in codes:
                raise ValueError(
                    f"records.{record}: code {layout.code} is also {codes[layout.code]}'s"
                )
            codes[layout.code] = record

    @staticmethod
    def field_names(layout: TextRecord | BinaryRecord) -> list[str]:
        """A record's field names, in layout order."""
        return list(layout.fields) if isinstance(layout, BinaryRecord) else list(layout)


def _fields_exist(profile: "DeviceProfile") -> None:
    """Every point's record and field are laid out in ``serial.records``."""
    settings = profile.settings_as(SerialSettings)
    assert settings is not None, "the serial family requires its settings"
    for index, point in enumerate(profile.points):
        address = point.address_as(SerialAddress)
        layout = settings.records.get(address.record)
        if layout is None or address.field not in settings.field_names(layout):
            raise ValueError(
                f"points[{index}] ({point.name}): record {address.record} "
                f"has no field {address.field!r} in serial.records"
            )


register(
    Addressing(
        key="serial",
        protocols=frozenset({"serial"}),
        point=SerialAddress,
        settings=SerialSettings,
        settings_required=True,
        check=_fields_exist,
    )
)
