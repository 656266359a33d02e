"""The control plane: SessionService, ExecutionService and CitationService over
gRPC (server.py, sessions.py, services.py), executions (executions/: the
Answerer loop, runtime steps, the turn pipeline, how an execution ends),
tool resolution with budgets and a sub-call cache (tools.py), budgets,
admission and quotas, and session lifecycle. It owns provider secrets; the
sandbox never calls a provider.
"""
