"""The REST gateway (docs/api.md#rest-api) and the MCP server (docs/api.md#mcp).

A translator in front of the gRPC control plane: it speaks to it through the
generated stubs only and must never import control-plane internals.
"""
