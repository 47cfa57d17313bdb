# The two commands: `make demo` runs the demo pipeline, `make test` runs the whole test suite.
# Each creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test venv demo-deps test-deps opencl bench bench-quick lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

demo-deps: $(PY)
	$(PIP) install -e .

# torch first, pinned to the CPU build, so that no extra pulls a CUDA build.
test-deps: $(PY) opencl
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[all]"

# Debian packages for the tests: PoCL (an OpenCL runtime, so that the pyclesperanto tests run
# for real), graphviz (for PipelineGraph.visualize) and chromium (the plate page's browser test).
# Installed only when running as root.
SYSTEM_PACKAGES := pocl-opencl-icd ocl-icd-libopencl1 graphviz chromium
opencl:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  if ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_PACKAGES)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null) \
	      || echo "warning: could not install $(SYSTEM_PACKAGES); the OpenCL, visualize and browser tests will skip"; \
	  fi; \
	fi

demo: demo-deps
	$(VENV)/bin/hcsgraph demo

test: test-deps
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: test-deps
	$(PY) -m benchmarks.run $(BENCH_ARGS)

lint: test-deps
	$(VENV)/bin/ruff check hcsgraph tests benchmarks examples

bench-quick: test-deps
	$(PY) -m benchmarks.run --quick
