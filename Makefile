# mlplane — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
UV_VERSION ?= 0.13.9
BIN := $(VENV)/bin
# Extras installed for the test suite; `make venv EXTRAS="--extra all --extra dev"` for everything.
EXTRAS ?= --extra dev --extra all

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: venv system-deps demo test lint lint-imports typecheck schemas docs check clean bench

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

## test: create/update the venv, check the import layers and the types, then run the whole test suite (loopback only)
test: venv system-deps image-base lint-imports typecheck
	$(LOOPBACK_ONLY) $(BIN)/python -m pytest

## lint: ruff over the code
lint: venv
	$(BIN)/ruff check platform operators pipelines tests bench examples

## lint-imports: the import layers of pyproject.toml's [tool.importlinter] (no cycles, no upward imports)
lint-imports: venv
	PYTHONPATH=platform:operators:pipelines $(BIN)/lint-imports --no-cache

## typecheck: mypy over mlplane, the operator and the pipelines ([tool.mypy] in pyproject.toml)
typecheck: venv
	$(BIN)/mypy

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
check: lint lint-imports typecheck test

# ---------------------------------------------------------------------------- container images
# images/<name>.Containerfile, tagged as mlplane.images names them (ghcr.io/mlplane/<name>:<version>).
# buildah by default (chroot isolation, vfs storage: works unprivileged and in containers); docker and
# podman work too: `make images CONTAINER_TOOL=docker`. BASE_IMAGE swaps the Python base of every image.
CONTAINER_TOOL ?= buildah
BASE_IMAGE ?= python:3.11-slim-bookworm
# Extra build flags, e.g. --build-arg UV_IMAGE=... or --layers.
IMAGE_BUILD_FLAGS ?=
# The CPU torch wheel uv.lock takes from /opt/wheels (ingest and ray images); docker cannot mount at build time.
WHEELS_MOUNT ?= $(if $(filter docker,$(notdir $(CONTAINER_TOOL))),,$(if $(wildcard /opt/wheels),-v /opt/wheels:/opt/wheels:ro))
IMAGE_TOOL_ENV := $(if $(filter buildah,$(notdir $(CONTAINER_TOOL))),BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs)
IMAGE_LABEL_ARGS = --build-arg VERSION=$$(PYTHONPATH=platform $(PYTHON) -c 'import mlplane; print(mlplane.__version__)') \
	--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: images images-push image-base image-test

## images: build every container image (CONTAINER_TOOL=buildah|podman|docker, BASE_IMAGE=...)
images:
	@set -e; PYTHONPATH=platform $(PYTHON) -m mlplane.images | while read -r name ref; do \
		case $$name in \
			mlplane-ray) base="--build-arg BUILD_IMAGE=$(BASE_IMAGE)";; \
			*) base="--build-arg BASE_IMAGE=$(BASE_IMAGE)";; \
		esac; \
		case $$name in mlplane-ingest|mlplane-ray) mount="$(WHEELS_MOUNT)";; *) mount="";; esac; \
		echo "== $$ref"; \
		$(IMAGE_TOOL_ENV) $(CONTAINER_TOOL) build -f images/$$name.Containerfile -t $$ref $$base $$mount \
			$(IMAGE_LABEL_ARGS) $(IMAGE_BUILD_FLAGS) .; \
		if [ $$name = mlplane-ray ]; then \
			echo "== $$ref-gpu"; \
			$(IMAGE_TOOL_ENV) $(CONTAINER_TOOL) build -f images/$$name.Containerfile -t $$ref-gpu $$base \
				--build-arg RAY_VARIANT=-gpu --build-arg TORCH=torch==2.13.0 $(IMAGE_LABEL_ARGS) $(IMAGE_BUILD_FLAGS) .; \
		fi; \
	done

## images-push: push every image `make images` built (log in to the registry first)
images-push:
	@set -e; PYTHONPATH=platform $(PYTHON) -m mlplane.images | while read -r name ref; do \
		$(IMAGE_TOOL_ENV) $(CONTAINER_TOOL) push $$ref; \
		if [ $$name = mlplane-ray ]; then $(IMAGE_TOOL_ENV) $(CONTAINER_TOOL) push $$ref-gpu; fi; \
	done

## image-base: make the offline Debian base the image tests build on (debootstrap; needs Debian's mirror once)
image-base: venv system-deps
	$(BIN)/python -c 'import sys; sys.path.insert(0, "tests/images"); import image_builder; print(image_builder.base_image())'

## image-test: build the operator and model-server images offline and run the chart's commands in them
image-test: image-base
	$(LOOPBACK_ONLY) $(BIN)/python -m pytest tests/images -q

## bench: serving benchmark (mlplane endpoint vs bare KServe), writes bench/RESULTS.md
bench: venv
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) .mlplane .mlplane-rag .pytest_cache
