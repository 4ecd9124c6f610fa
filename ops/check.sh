#!/usr/bin/env bash
# Lint, type-check, check the import edges between packages (import-linter) and test, the
# way CI does. Run from the repository root after install.
# A pytest run that collects no test (exit 5) fails here.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/python" ] || bin=$(dirname "$(command -v python3)")

step() { echo "== $*"; "$@"; }
step "$bin/ruff" check . || exit 1
step "$bin/mypy" || exit 1
step "$bin/lint-imports" || exit 1  # the contracts in pyproject.toml [tool.importlinter]
step "$bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
code=$?
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
