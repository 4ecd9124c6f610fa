# Developer targets; CI runs `bash .ci/run` (the README's test command).
PY ?= .venv/bin/python

.PHONY: install lint typecheck test unit integration bench check dev

install:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e '.[worker,dev]'

lint:
	.venv/bin/ruff check . && .venv/bin/lint-imports

typecheck:
	.venv/bin/mypy

test:
	$(PY) -m pytest -q tests

unit:
	$(PY) -m pytest -q tests/unit

integration:
	$(PY) -m pytest -q tests/integration

bench:
	$(PY) bench/stack.py

check:
	bash ops/check.sh

dev:
	.venv/bin/uml dev
