"""The worker's side of a task or actor call: running it and sending the reply."""
