"""How processes talk: framed, authenticated connections, TLS and the message codes."""
