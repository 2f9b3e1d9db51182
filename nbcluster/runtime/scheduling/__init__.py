"""What a task asks for and what a node offers: resources, placement, GPUs, host limits."""
