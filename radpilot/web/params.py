"""Path parameters shared by the web routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# The largest id a database row can have (a signed 64-bit integer): a larger number in a URL is
# answered 422 by validation instead of overflowing in the database driver (a 500).
MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=0, le=MAX_ROW_ID, description="Row id (a 64-bit integer)")]
