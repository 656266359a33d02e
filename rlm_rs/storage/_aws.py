"""AWS backend: DynamoDB items + S3 objects through boto3.

Items keep the spec's key attributes (PK, SK) and every other attribute
natively (numbers as DynamoDB N); one global secondary index GSI1 on GSI1PK
serves look-up of a session or an execution by its id. `ttl_epoch` is the
table's TTL attribute. Works against AWS, LocalStack or moto's server
(`AWS_ENDPOINT_URL`). Conditional writes map to ConditionExpressions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from rlm_rs.errors import RlmError
from rlm_rs.storage._dynamo_wire import wire_for
from rlm_rs.storage.interfaces import (
    INDEXES,
    LISTING_INDEX,
    TABLES,
    BlobInfo,
    Condition,
    Item,
    Put,
    Update,
    Write,
    conflict,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import GlobalSecondaryIndexTypeDef
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

_Batch = list[Any]  # ObjectIdentifier dicts; `list` is a method name in S3BlobStore
_LISTING_KEYS = (f"{LISTING_INDEX}PK", f"{LISTING_INDEX}SK")
_LISTING_GSI: GlobalSecondaryIndexTypeDef = {
    "IndexName": LISTING_INDEX,
    "KeySchema": [
        {"AttributeName": _LISTING_KEYS[0], "KeyType": "HASH"},
        {"AttributeName": _LISTING_KEYS[1], "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}
_HASH_GSIS: list[GlobalSecondaryIndexTypeDef] = [
    {
        "IndexName": index,
        "KeySchema": [{"AttributeName": f"{index}PK", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }
    for index in INDEXES
]
# Streamed objects: one PutObject up to this size, else a multipart upload
# of parts this size (S3's minimum part is 5 MiB), so at most one part is
# held in memory.
MULTIPART_PART_BYTES = 8 * 1024 * 1024
# Requests are built by this module's typed code, so botocore's per-call
# parameter validation (a walk of every request against the model: about a
# fifth of a request's CPU) is off.
_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30,
    parameter_validation=False,
)  # fmt: skip


def _to_ddb(item: Item) -> dict[str, Any]:
    """An item as DynamoDB attribute values, converted directly (no JSON
    round trip): a number is sent as its JSON text (an exponent through
    Decimal, "1E-7"), as the boto3 TypeSerializer path used to."""
    return {key: _value(value) for key, value in item.items()}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a stored number must be finite")
        text = repr(value)
        return {"N": str(Decimal(text)) if "e" in text else text}  # 1E-7, as DynamoDB writes it
    if isinstance(value, dict):
        return {"M": {str(k): _value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_value(v) for v in value]}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _from_ddb(raw: dict[str, Any]) -> Item:
    """An item from DynamoDB attribute values, as JSON-shaped Python (an
    integral number is an int, any other a float)."""
    return {key: _plain(value) for key, value in raw.items()}


def _plain(value: dict[str, Any]) -> Any:
    kind, data = next(iter(value.items()))
    if kind == "S":
        return data
    if kind == "N":
        return _number(data)
    if kind == "M":
        return {k: _plain(v) for k, v in data.items()}
    if kind == "L":
        return [_plain(v) for v in data]
    if kind == "BOOL":
        return bool(data)
    if kind == "NULL":
        return None
    raise TypeError(f"attribute type {kind} is not JSON")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        number = Decimal(text)
        return int(number) if number == number.to_integral_value() else float(number)


# The reads whose successful responses this module decodes itself: botocore's
# shape-driven parser (a walk of every attribute of every item: a third of a
# read's CPU) is skipped for them, and the JSON body kept as it came.
_RAW_BODY = "RawBody"
_RAW_OPERATIONS = ("GetItem", "Query", "UpdateItem")


def _keep_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's before-parse hook: a 2xx body goes to the caller as bytes
    (`RawBody`); an error is parsed as usual (its code, CancellationReasons)."""
    if int(response_dict.get("status_code") or 500) < 300:
        customized_response_dict[_RAW_BODY] = response_dict["body"]
        response_dict["body"] = b"{}"


def _body(response: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response[_RAW_BODY] or b"{}")
    return decoded


_METHODS = {
    "GetItem": "get_item", "Query": "query", "UpdateItem": "update_item", "PutItem": "put_item",
    "DeleteItem": "delete_item", "TransactWriteItems": "transact_write_items",
}  # fmt: skip


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoItemStore:
    def __init__(
        self,
        *,
        region: str,
        table_prefix: str = "rlm_",
        endpoint_url: str | None = None,
        max_pool_connections: int = 10,
    ) -> None:
        self.prefix = table_prefix
        config = _CONFIG.merge(Config(max_pool_connections=max_pool_connections))
        self.client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)
        for operation in _RAW_OPERATIONS:
            self.client.meta.events.register(f"before-parse.dynamodb.{operation}", _keep_body)
        # the item operations' lean path (_dynamo_wire.py); None: boto3 carries them
        self._wire = wire_for(self.client, connect_timeout=5, read_timeout=30)

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One item operation's decoded JSON answer (ClientError on failure)."""
        if self._wire is not None:
            return self._wire.call(operation, params)
        response = getattr(self.client, _METHODS[operation])(**params)
        return _body(response) if operation in _RAW_OPERATIONS else dict(response)

    def _table(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return f"{self.prefix}{table}"

    def create_tables(self) -> None:
        existing: set[str] = set()
        for page in self.client.get_paginator("list_tables").paginate():
            existing.update(page.get("TableNames", []))
        for table in TABLES:
            name = self._table(table)
            if name in existing:
                self._add_listing_index(name)
                continue
            try:
                self.client.create_table(
                    TableName=name,
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[
                        {"AttributeName": a, "AttributeType": "S"}
                        for a in ("PK", "SK", "GSI1PK", "GSI2PK", *_LISTING_KEYS)
                    ],
                    KeySchema=[
                        {"AttributeName": "PK", "KeyType": "HASH"},
                        {"AttributeName": "SK", "KeyType": "RANGE"},
                    ],
                    GlobalSecondaryIndexes=[*_HASH_GSIS, _LISTING_GSI],
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceInUseException":
                    raise
            self.client.get_waiter("table_exists").wait(TableName=name)
            self.client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl_epoch"},
            )

    def _add_listing_index(self, name: str) -> None:
        """Add GSI3 to a table created before it existed (DynamoDB builds it
        in the background; until then listings of older records are empty)."""
        described = self.client.describe_table(TableName=name)["Table"]
        if any(i["IndexName"] == LISTING_INDEX for i in described.get("GlobalSecondaryIndexes", [])):
            return
        self.client.update_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in _LISTING_KEYS],
            GlobalSecondaryIndexUpdates=[{"Create": _LISTING_GSI}],
        )

    def close(self) -> None:
        self.client.close()

    def put(self, table: str, item: Item, *, if_absent: bool = False) -> Item:
        stored = {**item, "version": 1}
        kwargs: dict[str, Any] = {"TableName": self._table(table), "Item": _to_ddb(stored)}
        if if_absent:
            kwargs["ConditionExpression"] = "attribute_not_exists(PK)"
        try:
            self._call("PutItem", kwargs)
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise conflict("item already exists") from None
            raise
        return stored

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        key = {"PK": {"S": pk}, "SK": {"S": sk}}
        raw = self._call(
            "GetItem", {"TableName": self._table(table), "Key": key, "ConsistentRead": True}
        ).get("Item")
        return _from_ddb(raw) if raw else None

    def _paged_query(self, **kwargs: Any) -> list[Item]:
        items: list[Item] = []
        while True:
            page = self._call("Query", kwargs)
            items.extend(_from_ddb(raw) for raw in page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def query(self, table: str, pk: str, sk_prefix: str = "") -> list[Item]:
        expression = "PK = :pk"
        values: dict[str, Any] = {":pk": {"S": pk}}
        if sk_prefix:
            expression += " AND begins_with(SK, :sk)"
            values[":sk"] = {"S": sk_prefix}
        return self._paged_query(
            TableName=self._table(table),
            KeyConditionExpression=expression,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        )

    def query_index(self, table: str, value: str, index: str = "GSI1") -> list[Item]:
        if index not in INDEXES:
            raise ValueError(f"unknown index {index!r}")
        items = self._paged_query(
            TableName=self._table(table),
            IndexName=index,
            KeyConditionExpression=f"{index}PK = :g",
            ExpressionAttributeValues={":g": {"S": value}},
        )
        return sorted(items, key=lambda item: str(item.get("SK", "")))

    def update(
        self, table: str, pk: str, sk: str, changes: Item, *, condition: Condition | None = None
    ) -> Item:
        names, values, sets = _set_expression(changes)
        expression = _condition_expression(condition or Condition(), names, values)
        try:
            response = self._call("UpdateItem", {
                "TableName": self._table(table), "Key": {"PK": {"S": pk}, "SK": {"S": sk}},
                "UpdateExpression": sets, "ConditionExpression": expression,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
                "ReturnValues": "ALL_NEW",
            })  # fmt: skip
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise conflict("conditional update failed") from None
            raise
        return _from_ddb(response["Attributes"])

    def delete(self, table: str, pk: str, sk: str) -> None:
        self._call("DeleteItem", {"TableName": self._table(table), "Key": {"PK": {"S": pk}, "SK": {"S": sk}}})

    def query_newest(self, table: str, value: str, *, before: str = "", limit: int) -> list[Item]:
        """One Query of GSI3, descending (eventually consistent: a GSI
        cannot be read consistently), followed while it stops short of `limit`."""
        expression = "GSI3PK = :p" + (" AND GSI3SK < :b" if before else "")
        values: dict[str, Any] = {":p": {"S": value}}
        if before:
            values[":b"] = {"S": before}
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table(table),
            "IndexName": LISTING_INDEX,
            "KeyConditionExpression": expression,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        while len(items) < limit:
            response = self._call("Query", {**kwargs, "Limit": limit - len(items)})
            items.extend(_from_ddb(raw) for raw in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items

    def transact(self, writes: list[Write]) -> None:
        """One TransactWriteItems request (one HTTP round trip; DynamoDB
        charges each item twice)."""
        items: list[dict[str, Any]] = []
        for write in writes:
            if isinstance(write, Put):
                put: dict[str, Any] = {
                    "TableName": self._table(write.table),
                    "Item": _to_ddb({**write.item, "version": 1}),
                }
                if write.if_absent:
                    put["ConditionExpression"] = "attribute_not_exists(PK)"
                items.append({"Put": put})
                continue
            key = {"PK": {"S": write.pk}, "SK": {"S": write.sk}}
            if isinstance(write, Update):
                names, values, sets = _set_expression(write.changes)
                expression = _condition_expression(write.condition, names, values)
                items.append({"Update": {
                    "TableName": self._table(write.table), "Key": key, "UpdateExpression": sets,
                    "ConditionExpression": expression, "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }})  # fmt: skip
            else:
                names, values = {}, {}
                expression = _condition_expression(write.condition, names, values)
                check: dict[str, Any] = {
                    "TableName": self._table(write.table), "Key": key, "ConditionExpression": expression,
                }  # fmt: skip
                if names:
                    check["ExpressionAttributeNames"] = names
                if values:
                    check["ExpressionAttributeValues"] = values
                items.append({"ConditionCheck": check})
        try:
            self._call("TransactWriteItems", {"TransactItems": items})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                if not reasons or any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                    raise conflict("conditional write failed") from None
            raise


def _set_expression(changes: Item) -> tuple[dict[str, str], dict[str, Any], str]:
    """(names, values, "SET ...") for `changes`, raising `version` by one."""
    names: dict[str, str] = {"#version": "version"}
    values: dict[str, Any] = {":one": {"N": "1"}}
    sets = ["#version = #version + :one"]
    for index, (key, value) in enumerate(changes.items()):
        if key in ("PK", "SK", "version"):
            continue
        names[f"#a{index}"] = key
        values[f":a{index}"] = _to_ddb({"v": value})["v"]
        sets.append(f"#a{index} = :a{index}")
    return names, values, "SET " + ", ".join(sets)


def _condition_expression(condition: Condition, names: dict[str, str], values: dict[str, Any]) -> str:
    """`condition` as a ConditionExpression (the item must exist), filling `names` and `values`."""
    conditions = ["attribute_exists(PK)"]
    if condition.version is not None:
        names["#version"] = "version"
        values[":expected"] = {"N": str(condition.version)}
        conditions.append("#version = :expected")
    if condition.attr_in is not None:
        attr, allowed = condition.attr_in
        names["#cond"] = attr
        placeholders = []
        for index, allowed_value in enumerate(allowed):
            values[f":in{index}"] = _to_ddb({"v": allowed_value})["v"]
            placeholders.append(f":in{index}")
        conditions.append(f"#cond IN ({', '.join(placeholders)})")
    if condition.lease_free_for is not None:
        owner, now = condition.lease_free_for
        names["#lo"], names["#lu"] = "lease_owner", "lease_until"
        values[":owner"] = {"S": owner}
        values[":now"] = {"N": repr(float(now))}
        conditions.append(
            "(attribute_not_exists(#lo) OR #lo = :owner OR attribute_not_exists(#lu) OR #lu <= :now)"
        )
    if condition.lease_held is not None:
        holder, token = condition.lease_held
        names["#lo"], names["#lt"] = "lease_owner", "lease_token"
        values[":holder"] = {"S": holder}
        values[":token"] = {"N": str(int(token))}
        conditions.append("#lo = :holder AND #lt = :token")
    for index, (attr, value) in enumerate(condition.equals):
        names[f"#eq{index}"] = attr
        values[f":eq{index}"] = _to_ddb({"v": value})["v"]
        conditions.append(f"#eq{index} = :eq{index}")
    return " AND ".join(conditions)


class S3BlobStore:
    def __init__(
        self, *, bucket: str, region: str, endpoint_url: str | None = None, max_pool_connections: int = 10
    ) -> None:
        self.bucket = bucket
        self.region = region
        config = _CONFIG.merge(Config(max_pool_connections=max_pool_connections))
        self.client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)

    def create_bucket(self) -> None:
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def put(self, key: str, data: bytes, content_type: str = "") -> BlobInfo:
        validate_key(key)
        existing = self.head(key)
        if existing is not None:
            if existing.size == len(data) and self.get(key) == data:
                return existing
            raise conflict("object keys are immutable")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        response = self.client.put_object(**kwargs)
        return BlobInfo(key=key, size=len(data), etag=str(response.get("ETag", "")).strip('"'))

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "") -> BlobInfo:
        """PutObject when the stream ends within one part, else a multipart
        upload (parts of MULTIPART_PART_BYTES; one part in memory at a time),
        aborted on any failure so no part outlives it."""
        validate_key(key)
        if self.head(key) is not None:
            raise conflict("object keys are immutable")
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        buffer = bytearray()
        stream = iter(chunks)
        for chunk in stream:
            buffer += chunk
            if len(buffer) >= MULTIPART_PART_BYTES:
                return self._multipart(key, stream, buffer, extra)
        response = self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(buffer), **extra)
        return BlobInfo(key=key, size=len(buffer), etag=str(response.get("ETag", "")).strip('"'))

    def _multipart(
        self, key: str, stream: Iterator[bytes], buffer: bytearray, extra: dict[str, Any]
    ) -> BlobInfo:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        size = 0

        def send(data: bytes) -> None:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=data
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": response["ETag"]})

        try:
            while True:
                while len(buffer) >= MULTIPART_PART_BYTES:
                    send(bytes(buffer[:MULTIPART_PART_BYTES]))
                    size += MULTIPART_PART_BYTES
                    del buffer[:MULTIPART_PART_BYTES]
                chunk = next(stream, None)
                if chunk is None:
                    break
                buffer += chunk
            if buffer:
                send(bytes(buffer))
                size += len(buffer)
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return BlobInfo(key=key, size=size, etag=str(response.get("ETag", "")).strip('"'))

    def _read_error(self, key: str, exc: ClientError) -> RlmError:
        return RlmError(
            "S3_READ_ERROR",
            "could not read an object",
            {"reason": exc.response.get("Error", {}).get("Code", "")},
        )

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        except ClientError as exc:
            raise self._read_error(key, exc) from None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        if end <= start:
            return b""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            body: bytes = response["Body"].read()
            return body
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise self._read_error(key, exc) from None

    def head(self, key: str) -> BlobInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return BlobInfo(key=key, size=int(response["ContentLength"]), etag=str(response["ETag"]).strip('"'))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def list(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield str(entry["Key"])

    def delete_prefix(self, prefix: str) -> int:
        """DeleteObjects in batches of 1,000 over a listing of the prefix.
        (On a versioned bucket this leaves delete markers: noncurrent versions
        need the bucket's lifecycle rule, docs/storage.md.)"""
        validate_prefix(prefix)
        deleted = 0
        batch: _Batch = []
        for key in list(self.list(prefix)):
            batch.append({"Key": key})
            if len(batch) == 1000:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, batch: _Batch) -> int:
        response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            raise RlmError("S3_READ_ERROR", "could not delete objects", {"failed": len(errors)})
        return len(batch)

    def local_path(self, key: str) -> Path | None:
        return None
