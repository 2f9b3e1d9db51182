#!/usr/bin/env bash
# Installs everything the tests need, then runs them all: lint, types, and the test suite.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages for the real parts the tests start (it says what it installs, and why).
bash scripts/test-parts.sh

python -m pip install -q --disable-pip-version-check -e ".[test]"
python -m nbcluster.kernel install --sys-prefix >/dev/null
# The widgets' pinned build tools, so the tests can check that the committed bundles are
# what js/ builds (tests/test_widget_bundles.py).
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix js --no-audit --no-fund --loglevel=error
fi

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
