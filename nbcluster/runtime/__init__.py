"""The distributed engine: processes, wire protocol, ownership, scheduling and the object store.

Nothing here imports from the notebook side (kernel, widgets, dashboard, extension).
"""
