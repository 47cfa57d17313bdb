# The two commands: `make demo` runs the demo pipeline, `make test` runs the whole test suite.
# Each creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test venv demo-deps test-deps opencl cluster-tools bench bench-quick lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

demo-deps: $(PY)
	$(PIP) install -e .

# torch first, pinned to the CPU build, so that no extra pulls a CUDA build.
test-deps: $(PY) opencl cluster-tools
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[all]" "torch==2.13.0"  # the pin again: no extra may move torch to a CUDA build
	$(PIP) install --no-deps "dask-kubernetes==2026.3.0"  # only its CRDs, the schema of docker/k8s/ (no Kubernetes client)

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

# Debian packages for tests/integration: podman (and what it runs with here), debootstrap (the test image's
# base, made without a registry), slurm-wlm and munge (a single-node SLURM). Installed only when running as root.
CLUSTER_PACKAGES := podman buildah debootstrap runc uidmap slirp4netns fuse-overlayfs containernetworking-plugins \
	golang-github-containernetworking-plugin-dnsname iptables slurm-wlm munge
cluster-tools:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  if ! dpkg -s $(CLUSTER_PACKAGES) >/dev/null 2>&1; then \
	    echo "installing $(CLUSTER_PACKAGES)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(CLUSTER_PACKAGES) >/dev/null) \
	      || echo "warning: could not install podman and SLURM; the integration tests will skip"; \
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
