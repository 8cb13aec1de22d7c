"""TLS: the server context, the plain port beside it, and ACME issuance."""
