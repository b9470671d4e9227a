# Two commands on a fresh machine: `make demo` and `make test`. Both install first when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kairos-installed

.PHONY: install demo test lint typecheck bench clean

install: $(STAMP)
	# The hot modules compiled with mypyc when a C compiler is there (else the sources run; see
	# stream/native.py). A no-op while the build is current; KAIROS_NATIVE=0 skips it.
	$(BIN)/python -m stream.native_build

# Reinstall only when the project's dependencies change (idempotent otherwise).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: a CPU wheel of 2.13.0 lies on local disk.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/kairos demo

# Two test processes, a test file each at a time (a module's tests share its broker): the integration
# tests mostly wait on brokers and workers, so two of them fit on two cores.
test: install
	bash deploy/install-test-deps.sh
	$(BIN)/python -m ruff check stream model tests benchmarks
	$(BIN)/python -m ruff format --check stream model tests benchmarks
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -rs --durations=20 -n 2 --dist loadfile

# Measurements, not tests: each prints figures and writes a report under benchmarks/reports/.
bench: install
	$(BIN)/python benchmarks/stream_throughput.py
	$(BIN)/python benchmarks/push_outcomes.py
	$(BIN)/python benchmarks/model_quality.py --quick

lint: install
	$(BIN)/python -m ruff check stream model tests benchmarks

typecheck: install
	$(BIN)/python -m mypy

clean:
	rm -rf .kairos .pytest_cache .mypy_cache .ruff_cache
