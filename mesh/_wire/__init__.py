"""Pure codecs: messages and their msgpack frames, gossip codec, handshake."""
