"""Request and response models of accounts."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.accounts.password_policy import MAX_LENGTH, MIN_LENGTH
from app.models import Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    role: Role
    password: Annotated[
        str | None,
        Field(
            min_length=MIN_LENGTH,
            max_length=MAX_LENGTH,
            description="not the user name (or a variant of it), not a common password",
        ),
    ] = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_days: Annotated[
        int | None,
        Field(ge=1, le=3650, description="days until the token expires; default CONCORD_TOKEN_DAYS"),
    ] = None


class TokenOut(BaseModel):
    token: str


class TokenInfo(BaseModel):
    """A token as listed: never its secret, which only its owner saw once."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
