"""Unity player builds: launching players over ML-Agents' gRPC protocol, ports, and the editor build."""
