"""`rlm-rs grpc`: a gRPC client for people without grpcurl.

It learns every service and message from the server's reflection service
(grpc.reflection.v1alpha) at run time, so it needs no .proto files and works
against the control plane and the sandbox pool alike: `list`, `describe`, and
`call` with a JSON body (protobuf's JSON mapping) and `-H` metadata. Replies
print as JSON with the proto's field names. It must never print the API key
it sends, and never import control-plane internals (a client only).
"""
