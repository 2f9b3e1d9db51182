"""The version of nbcluster, in a module of its own: nodes compare it when they join."""

__version__ = "0.1.0"
