# The commands the README names. Each installs what it needs into .venv first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint fmt bench up

install:
	scripts/install.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy app worker distillery file_rules jobspec
	$(BIN)/lint-imports --no-cache

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmarks/*.py that runs as a script (the others are its helpers), on real servers.
BENCHMARKS := $(shell grep -l '^if __name__ == "__main__":' benchmarks/*.py)

bench: install
	scripts/with-services.sh sh -c \
		'for script; do echo "== $$script"; $(BIN)/python "$$script" || exit 1; done' sh $(BENCHMARKS)

up: install
	$(BIN)/distill up
