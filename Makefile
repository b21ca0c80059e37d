# mlplane — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
UV_VERSION ?= 0.13.9
BIN := $(VENV)/bin
# Extras installed for the test suite; `make venv EXTRAS="--extra all --extra dev"` for everything.
EXTRAS ?= --extra dev --extra all

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: venv system-deps demo test lint schemas docs check clean bench

# Debian packages the tests put in the loop as the upstream components they stand for: buildah and
# debootstrap (build the images and run their commands, offline), PostgreSQL and Redis (MLflow's
# production backend, Feast's online store), Prometheus (a real PromQL engine for KEDA's queries).
SYSTEM_PACKAGES ?= buildah debootstrap postgresql redis-server prometheus
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"

## venv: create or update the virtualenv from the committed lock file (uv.lock)
venv: $(BIN)/uv
	$(BIN)/uv sync --frozen --inexact $(EXTRAS)

## system-deps: install the Debian packages the test suite needs (only those missing)
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## demo: bring up a local platform, train + register + deploy the iris model, call it over V2;
## then a RAG platform: ingest the docs corpus, a RAG service on Ray Serve, two questions (one streamed)
demo: venv
	$(BIN)/python examples/iris/demo.py
	$(BIN)/python examples/rag/demo.py

# The tests run in a private network namespace when the machine allows one (root: `unshare -n`;
# otherwise an unprivileged user namespace: `unshare -rn`): only loopback exists there, so no test can
# reach or be reached from the network. Ray Serve binds every interface whatever it is told; this is
# what keeps its test clusters private. Without namespaces the tests run as they are.
NETNS := $(shell if unshare -n true 2>/dev/null; then echo "unshare -n"; \
	elif unshare -rn true 2>/dev/null; then echo "unshare -rn"; fi)
LOOPBACK_ONLY := $(if $(NETNS),$(NETNS) sh -c 'ip link set lo up && exec "$$@"' sh)

## test: create/update the venv, then run the whole test suite (loopback only)
test: venv system-deps
	$(LOOPBACK_ONLY) $(BIN)/python -m pytest

## lint: ruff over the code
lint: venv
	$(BIN)/ruff check platform operators pipelines tests bench examples

## schemas: regenerate the committed JSON Schemas, CRDs and the chart's values.schema.json from the models
schemas: venv
	$(BIN)/python -m mlplane.spec.schema_gen
	$(BIN)/python -m mlplane.k8s.crds
	$(BIN)/python -m mlplane.k8s.chart_values

## docs: regenerate the spec and CLI references in docs/ from the code
docs: venv
	$(BIN)/python -m mlplane.spec.reference
	$(BIN)/python -m mlplane.cli.reference

## check: the pre-commit gate
check: lint test

## bench: serving benchmark (mlplane endpoint vs bare KServe), writes bench/RESULTS.md
bench: venv
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) .mlplane .mlplane-rag .pytest_cache
