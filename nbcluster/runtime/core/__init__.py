"""The core worker every driver and worker runs: connections, get/put/wait, output going home."""
