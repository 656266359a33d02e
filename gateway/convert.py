"""Protobuf <-> JSON translation for the REST gateway.

Generic over the generated messages: `*_json` fields (canonical JSON text on the
wire) become real JSON values under the name without the suffix, int64 stays an
integer (unlike json_format), unset optional scalars and messages become null.
It must never interpret a value: the control plane owns every meaning.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rlm_rs.canonical import canonical_json

_JSON_SUFFIX = "_json"


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    return message is not None and message.GetOptions().map_entry


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_dict(value)
    return value


def _load_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # never lose what the control plane sent


def to_dict(msg: Message) -> dict[str, Any]:
    """A message as the HTTP API shows it."""
    out: dict[str, Any] = {}
    descriptor: Any = msg.DESCRIPTOR
    for field in descriptor.fields:
        name = field.name
        value = getattr(msg, name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            result: Any = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            result = [_value(field, v) for v in value]
        elif field.has_presence and not msg.HasField(name):
            result = None
        else:
            result = _value(field, value)
        if name.endswith(_JSON_SUFFIX) and field.type == FieldDescriptor.TYPE_STRING:
            name = name[: -len(_JSON_SUFFIX)]
            result = _load_json(result) if isinstance(result, str) else result
        out[name] = result
    return out


def from_dict(msg: Message, data: dict[str, Any]) -> Message:
    """Fill `msg` from an HTTP body (None = unset); returns `msg`.

    Raises ValueError/TypeError on values the message cannot hold; the caller
    turns them into VALIDATION_ERROR.
    """
    descriptor: Any = msg.DESCRIPTOR
    fields = descriptor.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        if field is None and (key + _JSON_SUFFIX) in fields:
            field = fields[key + _JSON_SUFFIX]
            setattr(msg, field.name, canonical_json(value))
            continue
        if field is None:
            continue  # not part of the wire message (the gateway ignores it)
        if _is_map(field):
            target = getattr(msg, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_dict(target[k], v)
                else:
                    target[k] = v
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for item in value:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_dict(target.add(), item)
                else:
                    target.append(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            from_dict(getattr(msg, field.name), value)
        else:
            setattr(msg, field.name, value)
    return msg
