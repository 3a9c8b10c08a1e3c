"""OSDP addressing: a point is one kind of reply a reader sends, and which input or output.

OSDP (SIA Open Supervised Device Protocol, RS-485) has no registers: a peripheral
device answers the gateway's polls with typed replies. The card and keypad replies
(osdp_RAW or osdp_FMT, osdp_KEYPAD) carry what was presented; osdp_ISTATR and
osdp_OSTATR carry the state of each numbered input and output; osdp_LSTATR carries
the tamper and power states. A point names the reply and, for inputs and outputs,
the number. The reader's bus address and baud rate belong to the device's address
URL (docs/design.md section 12), not the profile.

Some points are derived by the gateway from several replies, because on an OSDP line
the gateway is the control panel but not the door controller, which decides:

``card_read``, ``keypress``
    A keyed hash of the card, or of the whole PIN typed (keys gathered up to the enter
    key or ``pin_timeout_s``), never the number or a digit itself.
``access``, ``credential``
    ``granted`` when the lock-release input follows a card or PIN within the grant
    window, ``denied`` otherwise; ``credential`` is the hash it concerns.
``forced``
    1 while the door contact is open after it opened without the lock released (and
    without a request to exit, where ``rex_input`` is wired).
``led``, ``buzzer``
    Writable outputs: an LED colour (0 off, 1 red, 2 green, 3 amber, 4 blue, ...)
    and a number of beeps (0 silences it).

The settings say which reader inputs the door's contact, lock-release sense and
request-to-exit are wired to, how long the door controller may take to release the
lock, and how keys typed on the keypad make up a PIN.
"""

from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import Field, model_validator

from schemas.addressing import Addressing, register
from schemas.strict import Strict

if TYPE_CHECKING:
    from schemas.profile import DeviceProfile

OsdpReply = Literal[
    "card_read",
    "keypress",
    "input_status",
    "output_status",
    "tamper",
    "power",
    "access",
    "credential",
    "forced",
    "led",
    "buzzer",
]

_NUMBERED: frozenset[str] = frozenset({"input_status", "output_status"})
WRITABLE_REPLIES: frozenset[str] = frozenset({"led", "buzzer"})
"""The replies that are outputs of the reader, written by the gateway."""
_DOOR_REPLIES: dict[str, tuple[str, ...]] = {
    "access": ("release_input",),
    "credential": ("release_input",),
    "forced": ("door_contact_input", "release_input"),
}
"""The derived replies and the settings each needs."""

InputNumber = Annotated[int, Field(ge=0, le=255)]


class OsdpAddress(Strict):
    """Which reply of an OSDP reader a point takes its value from."""

    reply: OsdpReply
    index: InputNumber | None = Field(
        default=None,
        description="The input or output number, for input_status and output_status only.",
    )

    @model_validator(mode="after")
    def _index_for_numbered_replies(self) -> Self:
        numbered = self.reply in _NUMBERED
        if numbered and self.index is None:
            raise ValueError(f"reply {self.reply} needs 'index', the input or output number")
        if not numbered and self.index is not None:
            raise ValueError(f"'index' applies to input_status and output_status, not {self.reply}")
        return self


class OsdpSettings(Strict):
    """The door beside the reader, as its inputs show it to the gateway."""

    door_contact_input: InputNumber | None = Field(
        default=0,
        description="The reader input wired to the door contact (active while the door "
        "stands open); null when the reader has no door contact.",
    )
    release_input: InputNumber | None = Field(
        default=1,
        description="The reader input wired to the lock-release sense (active while the "
        "door controller holds the strike released); null when there is none.",
    )
    rex_input: InputNumber | None = Field(
        default=None,
        description="The reader input wired to the request-to-exit button or sensor "
        "(active while pressed): the door opening within a few seconds of it is someone "
        "leaving, not forced. Null when there is none: then a door opened from inside "
        "without releasing the strike (free mechanical egress) reads as forced.",
    )
    grant_window_s: Annotated[float, Field(gt=0, le=30)] = Field(
        default=1.5,
        description="How long after a card or PIN the release may come and still count "
        "as access.granted; without one by then it is access.denied.",
    )
    pin_window_s: Annotated[float, Field(gt=0, le=60)] | None = Field(
        default=None,
        description="On doors that take a card and then a PIN: how long after the card "
        "its PIN may be typed and still join the card's decision (a card's denial waits "
        "this long). Null: a PIN joins a card only within grant_window_s.",
    )
    pin_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=5.0,
        description="How long the keypad may stay idle between two keys before the "
        "digits typed so far count as a whole PIN; the enter key (#) ends a PIN at once "
        "and the clear key (*) drops the digits typed.",
    )

    @model_validator(mode="after")
    def _distinct_inputs(self) -> Self:
        named = {
            "door_contact_input": self.door_contact_input,
            "release_input": self.release_input,
            "rex_input": self.rex_input,
        }
        seen: dict[int, str] = {}
        for key, number in named.items():
            if number is None:
                continue
            if number in seen:
                raise ValueError(f"{seen[number]} and {key} must be different inputs")
            seen[number] = key
        return self


def _fits_reader(profile: "DeviceProfile") -> None:
    """Outputs are writable and nothing else is; derived points have their inputs."""
    settings = profile.settings_as(OsdpSettings) or OsdpSettings()
    for index, point in enumerate(profile.points):
        reply = point.address_as(OsdpAddress).reply
        writable = reply in WRITABLE_REPLIES
        if point.writable != writable:
            should = "must be" if writable else "cannot be"
            raise ValueError(f"points[{index}] ({point.name}): a {reply} point {should} writable")
        missing = [key for key in _DOOR_REPLIES.get(reply, ()) if getattr(settings, key) is None]
        if missing:
            raise ValueError(
                f"points[{index}] ({point.name}): a {reply} point needs osdp.{missing[0]}"
            )


register(
    Addressing(
        key="osdp",
        protocols=frozenset({"osdp"}),
        point=OsdpAddress,
        settings=OsdpSettings,
        check=_fits_reader,
    )
)
