"""gRPC transport: the only package of the collector that imports grpc or the stubs."""
