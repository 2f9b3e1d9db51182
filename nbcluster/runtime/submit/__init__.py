"""The owner's side of a task: leasing workers, sending specs, replies, retries, recovery."""
