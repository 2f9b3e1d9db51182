#!/usr/bin/env bash
# Installs everything the tests need, then runs them all: lint, types, and the test suite.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2 gives the network-namespace tests their `ip` command.
if ! command -v ip >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

python -m pip install -q --disable-pip-version-check -e ".[test]"
python -m nbcluster.kernel install --sys-prefix >/dev/null

ruff check nbcluster tests benchmarks
mypy
python -m pytest "$@"

# The kernel again on the oldest IPython, ipykernel and jupyter_client that pyproject.toml
# allows: IPython moved when execution_count is incremented between 8 and 9, and the
# kernel must name cells right on both.
oldest=build/oldest-venv
python -m venv --clear "$oldest"
"$oldest/bin/python" -m pip install -q --disable-pip-version-check -e . \
  "ipython==8.0.1" "ipykernel==7.1.0" "jupyter_client==8.0.0" pytest pytest-timeout numpy
"$oldest/bin/python" -m nbcluster.kernel install --sys-prefix >/dev/null
"$oldest/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_kernel.py tests/test_kernel_routing.py tests/test_kernel_lifecycle.py
