"""The strict model base and the name type shared by the profile and the addressing families.

They live apart from ``schemas.profile`` because the profile imports every addressing
family (``schemas.protocols``), so a family cannot import the profile for them.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
"""A point name or record field name: what event rules and actions refer to."""


class Strict(BaseModel):
    """Refuses unknown keys, so a misspelt profile field is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)
