"""OSDP addressing: a point is one kind of reply a reader sends, and which input or output.

OSDP (SIA Open Supervised Device Protocol, RS-485) has no registers: a peripheral
device answers the gateway's polls with typed replies. The card and keypad replies
(osdp_RAW or osdp_FMT, osdp_KEYPAD) carry what was presented; osdp_ISTATR and
osdp_OSTATR carry the state of each numbered input and output; osdp_LSTATR carries
the tamper and power states. A point names the reply and, for inputs and outputs,
the number. The OSDP driver is not built yet; it will read points by these
addresses. The reader's bus address and baud rate belong to the device's address
URL (docs/design.md section 12), not the profile, so the family has no settings.
"""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from schemas.addressing import Addressing, register
from schemas.strict import Strict

OsdpReply = Literal["card_read", "keypress", "input_status", "output_status", "tamper", "power"]

_NUMBERED: frozenset[str] = frozenset({"input_status", "output_status"})


class OsdpAddress(Strict):
    """Which reply of an OSDP reader a point takes its value from."""

    reply: OsdpReply
    index: Annotated[int, Field(ge=0, le=255)] | None = Field(
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


register(Addressing(key="osdp", protocols=frozenset({"osdp"}), point=OsdpAddress))
