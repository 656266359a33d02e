"""Listings (ListSessions, ListExecutions): page sizes, status filters and
opaque cursors, newest first (docs/api.md#listings).

A cursor is base64url of `{"k": <the last record's listing key>, "f": <the
filters it was issued for>}`: the caller may only hand it back. It never
widens what a page can show (every page is read from the caller's own
tenant partition), and a cursor from other filters or of another shape is
VALIDATION_ERROR, never a 500. Listings are eventually consistent on
DynamoDB (a global secondary index); this module never reads storage itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from rlm_rs.errors import RlmError
from rlm_rs.limits import DEFAULT_SESSIONS_PAGE_SIZE, MAX_LISTING_TOKEN_CHARS, MAX_SESSIONS_PAGE_SIZE
from rlm_rs.wire_enums import WireEnum


def page_size(requested: int) -> int:
    """0..MAX_SESSIONS_PAGE_SIZE; 0 is the default."""
    if not 0 <= requested <= MAX_SESSIONS_PAGE_SIZE:
        raise RlmError(
            "VALIDATION_ERROR",
            f"page_size must be 0..{MAX_SESSIONS_PAGE_SIZE} (0: the default, {DEFAULT_SESSIONS_PAGE_SIZE})",
        )
    return requested or DEFAULT_SESSIONS_PAGE_SIZE


def status_filter(number: int, statuses: WireEnum[Any, Any]) -> str:
    """The status a filter names ("": unset, every status), else VALIDATION_ERROR."""
    if not number:
        return ""
    try:
        return str(statuses.to_domain(number))
    except ValueError:
        values = sorted(str(value) for value in statuses.domain)
        raise RlmError("VALIDATION_ERROR", f"status must be one of {', '.join(values)}") from None


def encode_cursor(key: str, filters: dict[str, str]) -> str:
    """The next_page_token after the record whose listing key is `key` ("" at the end)."""
    if not key:
        return ""
    raw = json.dumps({"k": key, "f": filters}, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, filters: dict[str, str]) -> str:
    """The listing key a page_token continues after ("" for the first page)."""
    if not token:
        return ""
    refused = RlmError("VALIDATION_ERROR", "page_token is not one this service issued for these filters")
    if len(token) > MAX_LISTING_TOKEN_CHARS or not token.isascii():
        raise refused
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise refused from None
    if not isinstance(value, dict) or value.get("f") != filters:
        raise refused
    key = value.get("k")
    if not isinstance(key, str) or not key:
        raise refused
    return key
