# `make demo` and `make test` set up .venv on first use; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: any other spec pulls several GB of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flux2 generate "a red circle on a blue background" --model tiny --orientation square

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Prints a table and writes benchmarks/results/latest.json (see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) outputs .pytest_cache
