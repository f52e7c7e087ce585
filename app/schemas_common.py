"""Field types shared by request schemas and routes: floats JSON can carry, ids the database can hold."""

from typing import Annotated, Any

from annotated_types import Interval
from fastapi import Path
from pydantic import AllowInfNan

# Primary keys are INTEGER columns: int32 on PostgreSQL (SQLite's are wider, so this bound is the tighter).
DB_ID_MAX = 2**31 - 1

FiniteFloat = Annotated[float, AllowInfNan(False)]
"""A float that JSON can carry: NaN and ±Infinity (1e400 parses to Infinity) are refused with 422."""

DbId = Annotated[int, Interval(ge=1, le=DB_ID_MAX)]
"""An id in a body or a query string; one out of the database's range is refused with 422."""

PathId = Annotated[int, Path(ge=1, le=DB_ID_MAX)]
"""An id in a path; one out of the database's range names nothing: 404 (see app.errors)."""


def file_responses(*media_types: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a route that answers a file in one of these media types."""
    return {200: {"content": {media_type.split(";")[0]: {} for media_type in media_types}}}
