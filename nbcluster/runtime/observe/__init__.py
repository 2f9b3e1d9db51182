"""Events, state tables and digests: what the CLI, widgets and dashboard read."""
