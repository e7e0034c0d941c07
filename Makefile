# The two commands: `make run` and `make test`. Each creates .venv when missing and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench clean test-container

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setup.py builds the resampler's C loop (gateway/audio/_polyphase.c) in place: a change to it reinstalls.
BUILD_INPUTS := pyproject.toml setup.py gateway/audio/_polyphase.c

$(STAMP_RUN): $(BUILD_INPUTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	touch $@

$(STAMP_DEV): $(BUILD_INPUTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

# The gateway never falls back to the emulator by itself: without Gemini credentials in the environment,
# `make run` asks for it (--emulator) and says so.
CREDENTIALS := $(strip $(GEMINI_API_KEY)$(GOOGLE_API_KEY)$(filter 1 true True TRUE yes on,$(GOOGLE_GENAI_USE_VERTEXAI)))
SERVE_FLAGS := $(if $(CREDENTIALS),,--emulator)
# A first run listens on this machine only, so `gateway call` and /admin/ work from it without tokens
# (a tunnel such as ngrok reaches it too); set GATEWAY_HOST to listen elsewhere (then see README, Security).
SERVE_HOST := $(if $(GATEWAY_HOST),,--host 127.0.0.1)

run: $(STAMP_RUN)
	@$(if $(CREDENTIALS),,echo "make run: no GEMINI_API_KEY set, so the gateway starts on the embedded Gemini Live emulator (gateway serve --emulator)")
	$(BIN)/gateway serve $(SERVE_HOST) $(SERVE_FLAGS)

# The deployment files too: hadolint and kubernetes-validate ship their rules and schemas (no network).
K8S_MANIFESTS := $(filter-out docker/k8s/kustomization.yaml,$(wildcard docker/k8s/*.yaml))

lint: $(STAMP_DEV)
	$(BIN)/ruff format --check gateway tests bench setup.py
	$(BIN)/ruff check gateway tests bench setup.py
	$(BIN)/hadolint docker/Dockerfile
	$(BIN)/kubernetes-validate --strict --kubernetes-version 1.30.0 --quiet $(K8S_MANIFESTS)

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# Calls in the e2e tests run in real time and mostly wait, so more workers than cores pay off.
PYTEST_WORKERS ?= 6

pytest: $(STAMP_DEV)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

test: lint typecheck pytest

# The image built, run and called with podman (tests/container/test_image.py): root, podman, runc and
# debootstrap, which .ci/run installs. The base image is made once with debootstrap and kept.
test-container: $(STAMP_DEV)
	$(BIN)/python -m pytest -m container tests/container -v -s --durations=0

bench: $(STAMP_DEV)
	$(BIN)/python bench/audio.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
