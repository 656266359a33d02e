"""REST-shaped JSON <-> the generated protobuf messages, for the gRPC transport.

The same rules as the gateway's translation (docs/api.md#conventions):
`*_json` string fields travel as canonical JSON text and appear in JSON under
the name without the suffix; int64 stays an integer; an unset optional field
is null. So a gRPC reply parses with the same code as a REST body. It must
never interpret a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_JSON_SUFFIX = "_json"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _is_map(field: Any) -> bool:
    return bool(field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def _load(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def to_json(msg: Message) -> dict[str, Any]:
    """A message as the REST API shows it."""
    out: dict[str, Any] = {}
    descriptor: Any = msg.DESCRIPTOR
    for field in descriptor.fields:
        name = field.name
        value = getattr(msg, name)
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            nested = value_field.type == FieldDescriptor.TYPE_MESSAGE
            result: Any = {k: to_json(v) if nested else v for k, v in value.items()}
        elif field.is_repeated:
            result = [to_json(v) if is_message else v for v in value]
        elif field.has_presence and not msg.HasField(name):
            result = None
        else:
            result = to_json(value) if is_message else value
        if name.endswith(_JSON_SUFFIX) and field.type == FieldDescriptor.TYPE_STRING:
            name = name[: -len(_JSON_SUFFIX)]
            result = _load(result) if isinstance(result, str) else result
        out[name] = result
    return out


def from_json(msg: Message, data: Mapping[str, Any]) -> Message:
    """Fill `msg` from REST-shaped JSON (None = unset, unknown names ignored); returns it."""
    descriptor: Any = msg.DESCRIPTOR
    fields = descriptor.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        if field is None and (key + _JSON_SUFFIX) in fields:
            setattr(msg, key + _JSON_SUFFIX, _canonical(value))
            continue
        if field is None:
            continue
        if _is_map(field):
            target = getattr(msg, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_json(target[k], v)
                else:
                    target[k] = v
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for item in value:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_json(target.add(), item)
                else:
                    target.append(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            from_json(getattr(msg, field.name), value)
        else:
            setattr(msg, field.name, value)
    return msg
