"""The HTTP/1.1 server of a worker: connection protocol, request state, responses."""
