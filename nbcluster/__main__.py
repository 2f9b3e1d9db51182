"""``python -m nbcluster``: the command-line interface."""

import sys

from nbcluster.cli import main

sys.exit(main())
