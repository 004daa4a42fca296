"""Generated protobuf contract of Records Transfer (see protos/rt/v1/*.proto)."""
