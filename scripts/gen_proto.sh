#!/usr/bin/env bash
# Regenerate the Python gRPC code from proto/ into rlm_rs/v1/ (the public
# API) and rlm_rs/sandbox/v1/ (the pool's internal SandboxService): the only
# command that writes generated code. tests/unit/test_proto_generated.py
# fails when the committed output is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/find-uv.sh
out="${1:-.}"
"$UV" run --frozen python -m grpc_tools.protoc -Iproto \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/rlm_rs/v1/*.proto proto/rlm_rs/sandbox/v1/*.proto
touch "$out/rlm_rs/v1/__init__.py" "$out/rlm_rs/sandbox/v1/__init__.py"
