"""Generated protobuf/gRPC stubs for package sentinel.v1 (see protos/generate.py)."""
