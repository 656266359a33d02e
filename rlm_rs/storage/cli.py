"""`rlm-rs storage init`, `rlm-rs upload`, `rlm-rs keys create`.

Upload stores raw files in the tenant's namespace,
`raw/<tenant>/<sha256 prefix>/<file name>` (content addressed, so uploading
the same file twice is a no-op and immutability holds; only that tenant can
name them in a session: rlm_rs/storage/uploads.py) and prints one s3:// URI
per line. `keys create` prints the API key
once, on its last line; only its keyed hash is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlm_rs.errors import RlmError
from rlm_rs.settings import Settings, get_settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.storage.metadata import API_KEY_PREFIX, validate_tenant_id
from rlm_rs.storage.uploads import store_upload


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    storage = subparsers.add_parser("storage", help="storage administration")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    init = storage_commands.add_parser("init", help="create tables and bucket (idempotent)")
    _data_dir_option(init)
    init.set_defaults(func=_init)

    upload = subparsers.add_parser(
        "upload", help="store raw files in a tenant's namespace; prints one s3:// URI each"
    )
    upload.add_argument("--tenant", required=True, help="the tenant whose sessions may use the files")
    _data_dir_option(upload)
    upload.add_argument("files", nargs="+", type=Path, help="the files to store")
    upload.set_defaults(func=_upload)

    keys = subparsers.add_parser("keys", help="API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create an API key for a tenant")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--name", default="", help="a label for the key (shown in listings, never secret)")
    _data_dir_option(create)
    create.set_defaults(func=_create_key)
    listing = keys_commands.add_parser(
        "list", help="list API keys (prefix, tenant, name, times; never a key)"
    )
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per key instead of a table")
    _data_dir_option(listing)
    listing.set_defaults(func=_list_keys)
    revoke = keys_commands.add_parser(
        "revoke", help="revoke an API key: refused from the next call on (there is no auth cache)"
    )
    revoke.add_argument(
        "key", help="the key's prefix as `keys list` shows it (rlm_key_XXXX), or the whole key"
    )
    _data_dir_option(revoke)
    revoke.set_defaults(func=_revoke_key)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="embedded data directory (RLM_DATA_DIR)")


def _open(args: argparse.Namespace) -> Storage:
    settings: Settings = get_settings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    return open_storage(settings)


def _init(args: argparse.Namespace) -> int:
    storage = _open(args)
    storage.init()
    print(json.dumps({"status": "ok", "bucket": storage.blobs.bucket}))
    return 0


def upload_file(storage: Storage, path: Path, tenant_id: str) -> str:
    return store_upload(storage.blobs, tenant_id, path.name, path.read_bytes())


def _upload(args: argparse.Namespace) -> int:
    try:
        validate_tenant_id(args.tenant)
    except RlmError as exc:
        print(f"rlm-rs upload: --tenant: {exc.message}", file=sys.stderr)
        return 2
    storage = _open(args)
    for path in args.files:
        if not path.is_file():
            print(f"rlm-rs upload: {path}: not a file", file=sys.stderr)
            return 1
    try:
        for path in args.files:
            print(upload_file(storage, path, args.tenant))
    except RlmError as exc:
        print(f"rlm-rs upload: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


_KEY_COLUMNS = ("key_prefix", "tenant_id", "name", "created_at", "last_used_at", "revoked")


def _list_keys(args: argparse.Namespace) -> int:
    storage = _open(args)
    keys = storage.metadata.list_api_keys(args.tenant)
    rows = [{column: key.get(column) for column in _KEY_COLUMNS} for key in keys]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    header = ("prefix", "tenant", "name", "created", "last used", "status")
    table = [header] + [
        (
            str(row["key_prefix"]), str(row["tenant_id"]), str(row["name"] or "-"),
            str(row["created_at"] or "-"), str(row["last_used_at"] or "-"),
            "revoked" if row["revoked"] else "active",
        )
        for row in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if not rows:
        print("(no keys)")
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    storage = _open(args)
    given = args.key.strip()
    if len(given) > len(API_KEY_PREFIX) + 4:  # a whole key: its hash names it
        record = storage.metadata.authenticate(given)
        matches = [record] if record else []
    else:
        matches = [k for k in storage.metadata.list_api_keys() if k.get("key_prefix") == given]
    if not matches:
        print(f"rlm-rs keys revoke: no active key matches {given[:12]!r}", file=sys.stderr)
        return 1
    if len(matches) > 1:
        print(
            f"rlm-rs keys revoke: {len(matches)} keys share the prefix {given!r}: pass the whole key",
            file=sys.stderr,
        )
        return 1
    key = matches[0]
    storage.metadata.revoke_api_key(str(key["key_hash"]))
    print(f"revoked {key['key_prefix']} (tenant {key['tenant_id']}); refused from the next call on")
    return 0


def _create_key(args: argparse.Namespace) -> int:
    storage = _open(args)
    try:
        plaintext, record = storage.metadata.create_api_key(args.tenant, name=args.name)
    except RlmError as exc:
        print(f"rlm-rs keys create: --tenant: {exc.message}", file=sys.stderr)
        return 2
    name = record["name"] or "-"
    print(f"tenant: {record['tenant_id']}  name: {name}  prefix: {record['key_prefix']}")
    print("Keep this key now; it cannot be shown again:")
    print(plaintext)
    return 0
