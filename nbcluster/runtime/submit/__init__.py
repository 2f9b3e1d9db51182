"""The owner's side of a task: arguments, leases, pushes, replies, retries, actor calls,
recovery and cancel, one module each; ``submitter`` composes them."""
