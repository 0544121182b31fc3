"""The only importers of zmq, zeroconf and sqlite3: transport, security, discovery, store."""
