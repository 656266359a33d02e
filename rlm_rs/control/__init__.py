"""The control plane: SessionService, ExecutionService and CitationService over
gRPC (rlm_rs/control/server.py), the Answerer loop (engine.py), runtime
steps, tool resolution with budgets and a sub-call cache (tools.py), citations
and traces. It owns provider secrets; the sandbox never calls a provider.
"""
