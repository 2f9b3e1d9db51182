"""The head's control plane (Ray's GCS): the node directory, actors, the Hub service."""
