#!/bin/sh
# Entry point of the sandbox pool container: checks the layers, then serves.
# `doctor` prints every isolation layer as JSON to the log; in strict mode
# (RLM_SANDBOX_STRICT=1, the image default) `serve` refuses to start when a
# layer is missing, so a mis-configured host fails loudly instead of running
# steps with less isolation than documented.
set -eu
socket="${LAMBDA_FUNCTION_NAME:-/run/rlm/sandbox.sock}"
mkdir -p "$(dirname "$socket")"
rlm-rs sandbox doctor --json || [ "${RLM_SANDBOX_STRICT:-1}" != "1" ]
exec rlm-rs sandbox serve --socket "$socket"
