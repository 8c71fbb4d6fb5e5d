"""HTTP gateway: the public REST API (CONTRACT section 3) in front of the gRPC services."""
