"""Protobuf <-> REST JSON for the gateway: the project's one codec (rlm_rs/codec.py).

`to_dict` renders a reply as the REST API shows it (snake_case, int64 as
integers, null for unset, `*_json` fields as JSON values, enums as the
contract's strings); `from_dict` fills a request message from a validated
body (ValueError/TypeError -> the caller answers VALIDATION_ERROR). It must
never interpret a value: the control plane owns every meaning.
"""

from __future__ import annotations

from rlm_rs.codec import from_json as from_dict
from rlm_rs.codec import to_json as to_dict

__all__ = ["from_dict", "to_dict"]
