"""Process settings: one pydantic-settings class, driven by the environment.

Names are the spec's (README.md, Configuration) where the spec names them; RLM_* names are
this appliance's own. Never log a `SecretStr` value.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _parse_json_object(value: Any) -> Any:
    """A JSON-object setting: empty or blank means unset (the default, {}), as
    operators write `RATE_LIMITS_JSON=` in an env file; anything else must be a
    JSON object."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


# NoDecode: pydantic-settings would json.loads the raw value itself (and fail on
# ""), before any validator could read it; _parse_json_object decides instead.
JsonObject = Annotated[dict[str, Any], NoDecode, BeforeValidator(_parse_json_object)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    # --- storage ---
    storage_backend: Literal["embedded", "aws"] = Field("embedded", alias="RLM_STORAGE_BACKEND")
    data_dir: Path = Field(Path(".rlm"), alias="RLM_DATA_DIR")
    aws_region: str = Field("us-east-1", alias="AWS_REGION")
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")
    ddb_table_prefix: str = Field("rlm_", alias="DDB_TABLE_PREFIX")
    s3_bucket: str = Field("rlm-rs", alias="S3_BUCKET")
    # --- ingestion ---
    parser_service_url: str | None = Field(None, alias="PARSER_SERVICE_URL")
    # Secrets Manager references (rlm_rs/secrets.py): the parser service's
    # shared bearer token, and the model provider's API key
    parser_service_auth_secret_arn: str | None = Field(None, alias="PARSER_SERVICE_AUTH_SECRET_ARN")
    llm_provider_secret_arn: str | None = Field(None, alias="LLM_PROVIDER_SECRET_ARN")
    # --- providers ---
    llm_provider: str = Field("scripted", alias="LLM_PROVIDER")
    default_root_model: str = Field("gpt-4o", alias="DEFAULT_ROOT_MODEL")
    default_sub_model: str = Field("gpt-4o-mini", alias="DEFAULT_SUB_MODEL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    llm_timeout_seconds: float = Field(60.0, alias="RLM_LLM_TIMEOUT_SECONDS")
    llm_max_retries: int = Field(2, alias="RLM_LLM_MAX_RETRIES")
    scripted_provider_file: Path | None = Field(None, alias="RLM_SCRIPTED_PROVIDER_FILE")
    # root-history compaction: the root model's context (tokens, estimated as
    # chars / 4) and the share of it past which older turns are summarised
    root_context_tokens: int = Field(128_000, ge=1_000, alias="RLM_ROOT_CONTEXT_TOKENS")
    compaction_share: float = Field(0.85, gt=0.0, le=1.0, alias="RLM_COMPACTION_SHARE")
    # --- budgets, limits ---
    # sub-model calls in flight (rlm_rs/control/subcalls.py): per process, per
    # execution, per tenant; children of one step running at once
    subcall_concurrency: int = Field(128, ge=1, le=1024, alias="RLM_SUBCALL_CONCURRENCY")
    subcall_concurrency_per_execution: int = Field(
        64, ge=1, le=1024, alias="RLM_SUBCALL_CONCURRENCY_PER_EXECUTION"
    )
    subcall_concurrency_per_tenant: int = Field(96, ge=1, le=1024, alias="RLM_SUBCALL_CONCURRENCY_PER_TENANT")
    child_concurrency: int = Field(4, ge=1, le=64, alias="RLM_CHILD_CONCURRENCY")
    default_budgets_json: JsonObject = Field(default_factory=dict, alias="DEFAULT_BUDGETS_JSON")
    rate_limits_json: JsonObject = Field(default_factory=dict, alias="RATE_LIMITS_JSON")
    price_table_json: JsonObject = Field(default_factory=dict, alias="RLM_PRICE_TABLE_JSON")
    enable_search_default: bool = Field(False, alias="ENABLE_SEARCH_DEFAULT")
    search_backend_config: JsonObject = Field(default_factory=dict, alias="SEARCH_BACKEND_CONFIG")
    # --- security ---
    api_key_pepper: SecretStr = Field(SecretStr("rlm-rs-dev-pepper"), alias="API_KEY_PEPPER")
    # --- tenancy and session lifecycle (docs/storage.md) ---
    # Raw-document folders of S3_BUCKET a tenant may name besides its own
    # raw/{tenant}/ namespace: {"tenant": ["shared/reference/", ...]}.
    raw_prefixes_json: Annotated[dict[str, list[str]], NoDecode, BeforeValidator(_parse_json_object)] = Field(
        default_factory=dict, alias="RLM_RAW_PREFIXES_JSON"
    )
    # How often the control plane removes deleted and expired sessions' data (0: never).
    session_sweep_seconds: float = Field(60.0, ge=0, alias="RLM_SESSION_SWEEP_SECONDS")
    # --- sandbox pool (the spec's LAMBDA_FUNCTION_NAME becomes a socket path) ---
    sandbox_socket: str | None = Field(None, alias="LAMBDA_FUNCTION_NAME")
    sandbox_strict: bool = Field(False, alias="RLM_SANDBOX_STRICT")
    sandbox_policy_json: JsonObject = Field(default_factory=dict, alias="RLM_SANDBOX_POLICY_JSON")
    # The pool opens manifest documents only below this directory (the node's
    # document cache); unset = any path the control plane names.
    sandbox_document_root: Path | None = Field(None, alias="RLM_SANDBOX_DOCUMENT_ROOT")
    # --- servers ---
    grpc_address: str = Field("127.0.0.1:50051", alias="RLM_GRPC_ADDRESS")
    http_host: str = Field("127.0.0.1", alias="RLM_HTTP_HOST")
    http_port: int = Field(8080, alias="RLM_HTTP_PORT")
    metrics_port: int | None = Field(None, alias="RLM_METRICS_PORT")
    tls_cert_file: Path | None = Field(None, alias="RLM_TLS_CERT_FILE")
    tls_key_file: Path | None = Field(None, alias="RLM_TLS_KEY_FILE")
    max_request_bytes: int = Field(10 * 1024 * 1024, alias="RLM_MAX_REQUEST_BYTES")
    # One upload's size (POST /v1/uploads, gRPC Upload); streamed, never held whole.
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, alias="RLM_MAX_UPLOAD_BYTES")
    log_level: str = Field("INFO", alias="RLM_LOG_LEVEL")
    # --- tracing (rlm_rs/tracing.py): OpenTelemetry spans over OTLP/gRPC, off by default ---
    otel_enabled: bool = Field(False, alias="RLM_OTEL_ENABLED")
    otel_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    # --- fairness and quotas (rlm_rs/control/admission.py, quotas.py; docs/control-plane.md) ---
    # The control plane's RPC threads; long calls (waits, watches, synchronous
    # starts, steps, tool resolution) never take the last `rpc_reserved_threads`.
    rpc_threads: int = Field(32, ge=4, le=1024, alias="RLM_RPC_THREADS")
    rpc_reserved_threads: int = Field(8, ge=1, alias="RLM_RPC_RESERVED_THREADS")
    # --- scale-out (docs/scale-out.md) ---
    # Answerer loops one control plane runs at once (the rest wait in its queue,
    # leased, or are taken over by another node once their creation lease runs out)
    execution_concurrency: int = Field(8, ge=1, le=512, alias="RLM_EXECUTION_CONCURRENCY")
    # the node's document cache of S3 downloads: past this, least recently used files go
    doc_cache_max_bytes: int = Field(4 * 1024**3, ge=1024 * 1024, alias="RLM_DOC_CACHE_MAX_BYTES")
    # boto3's HTTP connections per client; 0 = sized to the threads that use storage
    aws_max_pool_connections: int = Field(0, ge=0, le=4096, alias="RLM_AWS_MAX_POOL_CONNECTIONS")
    # {"default": {"running_executions": n, "live_sessions": n, "long_calls": n},
    #  "tenants": {"<tenant>": {...}}}; a missing field falls back, null = no limit
    quotas_json: JsonObject = Field(default_factory=dict, alias="RLM_QUOTAS_JSON")
    # --- integrity: persisted sizes (rlm_rs/control/limits.py, docs/control-plane.md) ---
    max_final_answer_chars: int = Field(200_000, ge=1, alias="RLM_MAX_FINAL_ANSWER_CHARS")
    max_tool_metadata_chars: int = Field(16_384, ge=4, alias="RLM_MAX_TOOL_METADATA_CHARS")
    max_step_record_bytes: int = Field(16 * 1024 * 1024, ge=65_536, alias="RLM_MAX_STEP_RECORD_BYTES")
    # --- operations: dev mode, gateway timeouts, metric labels ---
    # A control plane without a pool (no LAMBDA_FUNCTION_NAME) runs model code in
    # its own process, next to the provider key: it refuses unless this is set.
    dev_unsandboxed: bool = Field(False, alias="RLM_DEV_UNSANDBOXED")
    # The gateway closes a connection whose request headers, or whose body, have
    # not fully arrived this many seconds after they started (slow clients).
    http_header_timeout_seconds: float = Field(10.0, gt=0, alias="RLM_HTTP_HEADER_TIMEOUT_SECONDS")
    http_body_timeout_seconds: float = Field(60.0, gt=0, alias="RLM_HTTP_BODY_TIMEOUT_SECONDS")
    http_max_header_bytes: int = Field(16 * 1024, ge=1024, alias="RLM_HTTP_MAX_HEADER_BYTES")
    http_max_connections: int = Field(1000, ge=1, alias="RLM_HTTP_MAX_CONNECTIONS")
    # Model names allowed as metric label values (comma-separated); default: every
    # priced model plus DEFAULT_ROOT_MODEL and DEFAULT_SUB_MODEL. Others: "other".
    model_allowlist: str = Field("", alias="RLM_MODEL_ALLOWLIST")
    # --- ingestion worker (rlm_rs/ingestion/worker.py, docs/ingestion.md) ---
    # Documents one worker parses at once, and at most this many for one tenant
    # (the rest stay free for other tenants; each parse ends by PARSE_TIMEOUT).
    ingest_max_parses: int = Field(4, ge=1, le=64, alias="RLM_INGEST_MAX_PARSES")
    ingest_max_parses_per_tenant: int = Field(2, ge=1, le=64, alias="RLM_INGEST_MAX_PARSES_PER_TENANT")

    @model_validator(mode="after")
    def _reserve_below_threads(self) -> Settings:
        if self.rpc_reserved_threads >= self.rpc_threads:
            raise ValueError("RLM_RPC_RESERVED_THREADS must be below RLM_RPC_THREADS")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
