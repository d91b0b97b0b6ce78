# Two commands on a fresh machine:
#   make demo   - create .venv, install gigaseg, and run the end-to-end demo (gigaseg demo)
#   make test   - create .venv, install gigaseg with test extras, and run the test suite
# and, for development, make lint: ruff and mypy with the settings in pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch 2.13.0 lies on disk on our Linux x86_64 / Python 3.11 machines and
# an unpinned install would pull a CUDA build of several GB; elsewhere pip picks the build
# for the platform. Override with `make TORCH=torch==X.Y.Z`.
TORCH ?= $(shell $(PYTHON) -c "import platform, sys; print('torch==2.13.0' if (platform.system(), platform.machine(), sys.version_info[:2]) == ('Linux', 'x86_64', (3, 11)) else 'torch>=2.1')")

.PHONY: demo test test-all lint bench install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/gigaseg demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# everything the CPU can run, the slow checks included (the full demo must reach its Dice: minutes)
test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not gpu"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
