# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates the virtual environment it needs in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test test-faults lint typecheck pytest bench screenshots compose-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "clipft needs Python 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clipft demo

serve: $(STAMP)
	$(BIN)/clipft serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/vulture

typecheck: $(STAMP)
	$(BIN)/mypy

# Two test processes for two cores: much of the suite waits on worker and training processes,
# and each test file stays in one process (--dist loadfile) with its module fixtures.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test: lint typecheck pytest

# The fault scenarios alone: killed, hung and crashed processes, broker and database outages.
test-faults: $(STAMP)
	$(BIN)/pytest -m faults $(PYTEST_ARGS)

# The README's pictures of the dashboard, taken by its browser tests (needs Chromium).
screenshots: $(STAMP)
	CLIPFT_SCREENSHOTS_DIR=docs/screenshots CLIPFT_DASHBOARD_TEST_EPOCHS=60 \
		$(BIN)/pytest tests/ui -k train $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.ingest_threads
	$(BIN)/python -m bench.train_throughput
	$(BIN)/python -m bench.predict_batching
	$(BIN)/python -m bench.training_process_start
	$(BIN)/python -m bench.predict_throughput --model vit-b-32
	$(BIN)/python -m bench.predict_throughput --model tiny-clip
	$(BIN)/python -m bench.methods
	$(BIN)/python -m bench.ddp_scaling
	$(BIN)/python -m bench.onnx_throughput

# The image built and the compose stack run for real on the CPU (docs/deployment.md, "The
# compose check"): needs Docker with Compose 2.24+, about 10 minutes and 7 GB of disk.
compose-check:
	bash deploy/compose_check.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
