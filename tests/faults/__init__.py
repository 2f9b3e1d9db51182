"""Fault injection: a workload run while workers, actors and nodes are killed."""
