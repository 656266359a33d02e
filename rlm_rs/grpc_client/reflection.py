"""Descriptors from a server's reflection service, and calls made with them.

`Reflected(channel)` wraps grpcio-reflection's descriptor database in a
protobuf DescriptorPool; `invoke` sends one JSON request to a unary or
server-streaming method and yields each reply as a dict. Client streaming
methods are refused (none of RLM-RS's services has one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class ClientError(Exception):
    """A usage problem (unknown service or method, a body that does not parse)."""


class Reflected:
    def __init__(self, channel: grpc.Channel) -> None:
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)
        self.channel = channel

    def services(self) -> list[str]:
        return sorted(self.database.get_services())

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            known = ", ".join(self.services())
            raise ClientError(f"no service {name!r} on this server (it has: {known})") from None

    def method(self, full_name: str) -> descriptor.MethodDescriptor:
        """`pkg.Service/Method` or `pkg.Service.Method`."""
        service_name, sep, method_name = full_name.replace("/", ".").rpartition(".")
        if not sep or not service_name:
            raise ClientError(f"{full_name!r}: write it as package.Service/Method")
        service = self.service(service_name)
        found = service.methods_by_name.get(method_name)
        if found is None:
            known = ", ".join(sorted(service.methods_by_name))
            raise ClientError(f"{service_name} has no method {method_name!r} (it has: {known})")
        return found

    def symbol(self, name: str) -> Any:
        """A service, method or message descriptor by its full name."""
        pool = self.pool
        for find in (pool.FindServiceByName, pool.FindMessageTypeByName, pool.FindEnumTypeByName):
            try:
                return find(name)
            except KeyError:
                continue
        owner = name.replace("/", ".").rpartition(".")[0]
        if owner in self.services():
            return self.method(name)
        raise ClientError(f"no symbol {name!r} on this server (services: {', '.join(self.services())})")

    def invoke(
        self,
        method: descriptor.MethodDescriptor,
        body: str,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        if method.client_streaming:
            raise ClientError(f"{method.full_name} takes a stream of requests; this client sends one")
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        try:
            request = json_format.Parse(body or "{}", request_class())
        except (json_format.ParseError, json.JSONDecodeError) as exc:
            raise ClientError(f"the body is not a {method.input_type.full_name}: {exc}") from None
        path = f"/{method.containing_service.full_name}/{method.name}"
        serialize, deserialize = type(request).SerializeToString, reply_class.FromString
        replies: Iterable[Message]
        if method.server_streaming:
            stream = self.channel.unary_stream(path, serialize, deserialize)
            replies = stream(request, metadata=tuple(metadata), timeout=timeout)
        else:
            unary = self.channel.unary_unary(path, serialize, deserialize)
            replies = [unary(request, metadata=tuple(metadata), timeout=timeout)]
        for reply in replies:
            yield json_format.MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )


def describe(item: Any) -> str:
    """A short proto-like text for a service, method, message or enum descriptor."""
    if isinstance(item, descriptor.ServiceDescriptor):
        lines = [f"service {item.full_name} {{"]
        lines += [f"  {_rpc_line(m)}" for m in item.methods]
        return "\n".join([*lines, "}"])
    if isinstance(item, descriptor.MethodDescriptor):
        return _rpc_line(item)
    if isinstance(item, descriptor.EnumDescriptor):
        values = [f"  {v.name} = {v.number};" for v in item.values]
        return "\n".join([f"enum {item.full_name} {{", *values, "}"])
    lines = [f"message {item.full_name} {{"]
    for field in item.fields:
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        label = "repeated " if field.is_repeated and not is_map else ""
        lines.append(f"  {label}{_type_name(field)} {field.name} = {field.number};")
    return "\n".join([*lines, "}"])


def _rpc_line(method: descriptor.MethodDescriptor) -> str:
    request = ("stream " if method.client_streaming else "") + method.input_type.full_name
    reply = ("stream " if method.server_streaming else "") + method.output_type.full_name
    return f"rpc {method.name}({request}) returns ({reply});"


_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(descriptor.FieldDescriptor).items()
    if name.startswith("TYPE_")
}


def _type_name(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            return f"map<{_type_name(key)}, {_type_name(value)}>"
        return str(field.message_type.full_name)
    if field.enum_type is not None:
        return str(field.enum_type.full_name)
    return _SCALARS.get(field.type, "?")
