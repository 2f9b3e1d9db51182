"""The user's API (nbcluster.init, remote, get, actors) on top of the core worker."""
