"""HTTP gateway: the public REST API (README.md, "Using the API"; /docs) in front of the gRPC services."""
