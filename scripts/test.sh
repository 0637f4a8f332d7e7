#!/usr/bin/env bash
# Install, check the import contracts (pyproject.toml's [tool.importlinter]), find PostgreSQL and
# Redis (scripts/with-services.sh), run the test suite.
# Extra arguments go to pytest:  scripts/test.sh -k lifecycle
# Tests are never skipped for a missing service or browser, and a run that collects no tests fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
scripts/ensure-chromium.sh
scripts/ensure-bwrap.sh
.venv/bin/lint-imports --no-cache  # a broken contract fails the run before any test
status=0
scripts/with-services.sh .venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests; that is a failure, not a pass." >&2
  status=1
fi
exit "$status"
