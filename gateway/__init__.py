"""The REST gateway (SPEC §10) and the MCP server (SPEC §11).

A translator in front of the gRPC control plane: it speaks to it through the
generated stubs only and must never import control-plane internals.
"""
