"""Object bytes: serialization, the node's shared-memory store, and moving objects between nodes."""
