"""A node's processes: the node main, its agent, the fork server, joining and launching."""
