"""Records Transfer client library: the protocol every party speaks."""
