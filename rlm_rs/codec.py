"""The project's one JSON shape for protobuf messages (docs/api.md#conventions).

Every store, trace and API response that holds a message goes through here:
field names as in the proto (snake_case), 64-bit integers as JSON integers,
an unset optional field or message as null, a `*_json` string field (canonical
JSON text on the wire) as the JSON value itself under the name without the
suffix, and an enum as the contract's value (the value name without the enum's
prefix, lower-cased for enums marked `(rlm_rs.v1.json_lowercase)`; 0, the
`*_UNSPECIFIED` value, is null). The proto's JSON options (common.proto) add
the contract's presentation: a `(json_type)` message starts with its `type`,
a `(json_null_when_empty)` string is null when empty, an unset field of a
`(json_empty_when_unset)` message type shows its empty form, and a
`(json_omit_unset)` message leaves its unset optional fields out. `from_json` is
the inverse, and also reads
records stored in protobuf's own JSON shape (camelCase names, int64 strings)
before this module existed. It never interprets a value beyond its type.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from rlm_rs.canonical import canonical_json
from rlm_rs.v1 import common_pb2

M = TypeVar("M", bound=Message)

JSON_SUFFIX = "_json"
_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)  # fmt: skip
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


# ---------------------------------------------------------------- enums
@dataclass(frozen=True)
class EnumCodec:
    """An enum's contract values: number -> JSON string (0 -> None) and back."""

    name: str
    to_value: Mapping[int, str | None]
    to_number: Mapping[str, int]

    def json(self, number: int) -> str | None:
        if number in self.to_value:
            return self.to_value[number]
        return str(number)  # a value this build does not know: shown, never dropped

    def number(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"{self.name} must be one of {sorted(self.to_number)}")
        if isinstance(value, int) and value in self.to_value:
            return value
        if isinstance(value, str) and value in self.to_number:
            return self.to_number[value]
        raise ValueError(f"{self.name} must be one of {sorted(self.to_number)}, not {value!r}")


def enum_prefix(enum_name: str) -> str:
    """`ExecutionStatus` -> `EXECUTION_STATUS_` (the buf STANDARD prefix)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"


@functools.cache
def enum_codec(descriptor: EnumDescriptor) -> EnumCodec:
    prefix = enum_prefix(descriptor.name)
    lowercase = descriptor.GetOptions().Extensions[common_pb2.json_lowercase]
    to_value: dict[int, str | None] = {}
    to_number: dict[str, int] = {}
    for value in descriptor.values:
        if value.number == 0:
            to_value[0] = None
            continue
        short = value.name.removeprefix(prefix)
        short = short.lower() if lowercase else short
        to_value[value.number] = short
        to_number[short] = value.number
        to_number[value.name] = value.number  # the proto spelling is accepted too
    return EnumCodec(descriptor.full_name, to_value, to_number)


def enum_json(enum_type: Any, number: int) -> str | None:
    """The contract's value of a generated enum's member (None for 0)."""
    return enum_codec(enum_type.DESCRIPTOR).json(number)


def enum_number(enum_type: Any, value: Any) -> int:
    """The member number of a contract value (ValueError for an unknown one)."""
    return enum_codec(enum_type.DESCRIPTOR).number(value)


# ---------------------------------------------------------------- field plans
@dataclass(frozen=True)
class _Field:
    name: str
    out: str  # the JSON name (without `_json` for JSON text fields)
    field: FieldDescriptor
    is_map: bool
    repeated: bool
    presence: bool
    message: bool
    json_text: bool
    null_when_empty: bool
    empty_when_unset: bool
    enum: EnumCodec | None
    value_field: FieldDescriptor | None  # a map's value field


def _plan_field(field: FieldDescriptor) -> _Field:
    message_type = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    is_map = bool(message_type is not None and message_type.GetOptions().map_entry)
    value_field = message_type.fields_by_name["value"] if message_type is not None and is_map else None
    typed = value_field if value_field is not None else field
    json_text = field.name.endswith(JSON_SUFFIX) and field.type == FieldDescriptor.TYPE_STRING
    return _Field(
        name=field.name,
        out=field.name[: -len(JSON_SUFFIX)] if json_text else field.name,
        field=field,
        is_map=is_map,
        repeated=field.is_repeated and not is_map,
        presence=field.has_presence and not field.is_repeated,
        message=typed.type == FieldDescriptor.TYPE_MESSAGE,
        json_text=json_text,
        null_when_empty=field.GetOptions().Extensions[common_pb2.json_null_when_empty],
        empty_when_unset=message_type is not None
        and message_type.GetOptions().Extensions[common_pb2.json_empty_when_unset],
        enum=enum_codec(typed.enum_type) if typed.type == FieldDescriptor.TYPE_ENUM else None,
        value_field=value_field,
    )


@dataclass(frozen=True)
class _Plan:
    type_tag: str  # (json_type), "" for none
    omit_unset: bool  # (json_omit_unset)
    fields: tuple[_Field, ...]


@functools.cache
def _plan(descriptor: Descriptor) -> _Plan:
    options = descriptor.GetOptions()
    return _Plan(
        options.Extensions[common_pb2.json_type],
        options.Extensions[common_pb2.json_omit_unset],
        tuple(_plan_field(f) for f in descriptor.fields),
    )


@functools.cache
def _by_key(descriptor: Descriptor) -> Mapping[str, _Field]:
    """Every name a stored or sent dict may use for a field: its JSON name,
    its proto name, and protobuf JSON's camelCase (records written before)."""
    keys: dict[str, _Field] = {}
    for f in _plan(descriptor).fields:
        keys.setdefault(f.field.json_name, f)
        keys[f.name] = f
        keys[f.out] = f
    return keys


# ---------------------------------------------------------------- message -> JSON
def _load_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # never lose what was sent


def _scalar_out(f: _Field, value: Any) -> Any:
    if f.message:
        return to_json(value)
    if f.enum is not None:
        return f.enum.json(value)
    return value


def to_json(msg: Message) -> dict[str, Any]:
    """A message in the project's JSON shape."""
    plan = _plan(msg.DESCRIPTOR)
    out: dict[str, Any] = {"type": plan.type_tag} if plan.type_tag else {}
    for f in plan.fields:
        value = getattr(msg, f.name)
        if f.is_map:
            result: Any = {k: _scalar_out(f, v) for k, v in value.items()}
        elif f.repeated:
            result = [_scalar_out(f, v) for v in value]
        elif f.presence and not msg.HasField(f.name):
            if plan.omit_unset:
                continue
            result = to_json(value) if f.empty_when_unset else None
        elif f.json_text:
            result = _load_json(value)
        elif f.null_when_empty and value == "":
            result = None
        else:
            result = _scalar_out(f, value)
        out[f.out] = result
    return out


# ---------------------------------------------------------------- JSON -> message
def _scalar_in(f: _Field, typed: FieldDescriptor, value: Any) -> Any:
    if f.enum is not None:
        return f.enum.number(value)
    if typed.type in _INT_TYPES and isinstance(value, str):
        return int(value)  # protobuf JSON's int64 strings (records written before)
    if typed.type in _FLOAT_TYPES and isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value)
    return value


def _fill(f: _Field, msg: Message, key: str, value: Any) -> None:
    if f.json_text and key != f.name:  # the JSON value under the name without `_json`
        setattr(msg, f.name, canonical_json(value))
    elif f.is_map:
        target: Any = getattr(msg, f.name)
        assert f.value_field is not None
        for k, v in value.items():
            if f.message:
                from_json(target[k], v)
            else:
                target[k] = _scalar_in(f, f.value_field, v)
    elif f.repeated:
        target = getattr(msg, f.name)
        for item in value:
            if f.message:
                from_json(target.add(), item)
            else:
                target.append(_scalar_in(f, f.field, item))
    elif f.message:
        from_json(getattr(msg, f.name), value)
    else:
        setattr(msg, f.name, _scalar_in(f, f.field, value))


def from_json(msg: M, data: Mapping[str, Any]) -> M:
    """Fill `msg` from the project's JSON (None = unset, unknown names
    ignored); returns `msg`. Raises ValueError or TypeError for a value the
    field cannot hold (callers answer VALIDATION_ERROR)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{msg.DESCRIPTOR.name} must be a JSON object")
    keys = _by_key(msg.DESCRIPTOR)
    for key, value in data.items():
        if value is None:
            continue
        f = keys.get(key)
        if f is not None:
            _fill(f, msg, key, value)
    return msg


def parse(message_type: type[M], data: Mapping[str, Any]) -> M:
    """A new message of `message_type` from the project's JSON."""
    return from_json(message_type(), data)
