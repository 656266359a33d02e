"""Storage: a metadata store (six tables, conditional writes, leases) and a
blob store (immutable objects), with two backends behind the same
interfaces: `embedded` (SQLite WAL + local directory, the default) and `aws`
(DynamoDB + S3). Open it with `open_storage(settings)`; nothing else picks a
backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlm_rs.settings import Settings
from rlm_rs.storage.interfaces import BlobStore, ItemStore
from rlm_rs.storage.metadata import MetadataStore


@dataclass
class Storage:
    metadata: MetadataStore
    blobs: BlobStore

    def init(self) -> None:
        """Create tables and bucket; idempotent."""
        self.metadata.items.create_tables()
        self.blobs.create_bucket()

    def close(self) -> None:
        self.metadata.items.close()


def pool_connections(settings: Settings) -> int:
    """boto3's connection pool per client: every thread that may use storage
    at once (the RPC threads, the Answerer loops, each loop's tool threads,
    the heartbeat and the sweeps), unless set (RLM_AWS_MAX_POOL_CONNECTIONS)."""
    if settings.aws_max_pool_connections:
        return settings.aws_max_pool_connections
    return settings.rpc_threads + 4 * settings.execution_concurrency + 8


def open_storage(settings: Settings) -> Storage:
    pepper = settings.api_key_pepper.get_secret_value().encode("utf-8")
    items: ItemStore
    blobs: BlobStore
    if settings.storage_backend == "aws":
        from rlm_rs.storage._aws import DynamoItemStore, S3BlobStore

        pool = pool_connections(settings)
        items = DynamoItemStore(
            region=settings.aws_region,
            table_prefix=settings.ddb_table_prefix,
            endpoint_url=settings.aws_endpoint_url,
            max_pool_connections=pool,
        )
        blobs = S3BlobStore(
            bucket=settings.s3_bucket,
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            max_pool_connections=pool,
        )
        return Storage(MetadataStore(items, pepper), blobs)
    from rlm_rs.storage._embedded import LocalBlobStore, SqliteItemStore

    data_dir = settings.data_dir
    items = SqliteItemStore(data_dir / "metadata.sqlite3", settings.ddb_table_prefix)
    blobs = LocalBlobStore(data_dir / "blobs", settings.s3_bucket)
    storage = Storage(MetadataStore(items, pepper), blobs)
    storage.init()  # embedded: creating is cheap and idempotent
    return storage


__all__ = ["BlobStore", "ItemStore", "MetadataStore", "Storage", "open_storage"]
