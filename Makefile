# Two commands for a newcomer: `make up` (the appliance, with a demo) and
# `make test` (the whole suite). Both install uv and the locked environment;
# `make test` also installs the Debian packages its tests need when it runs as
# root with apt. Scripts in scripts/ find uv the same way (scripts/find-uv.sh).
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV
# Chromium: the trace viewer is tested in a real headless browser; libseccomp2:
# the sandbox's seccomp layer; iproute2: the network-namespace checks.
TEST_APT_PACKAGES := chromium libseccomp2 iproute2
# `make test PYTEST_ARGS="-x tests/unit"` runs a part of the suite.
PYTEST_ARGS ?=

.PHONY: deps test-deps up demo test lint proto proto-lint containers-test

deps:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv \
		|| python3 -m pip install --user --quiet uv 2>/dev/null \
		|| python3 -m pip install --user --quiet --break-system-packages uv 2>/dev/null \
		|| curl -LsSf https://astral.sh/uv/install.sh | sh
	$(UV) sync --frozen

test-deps:
	@./scripts/apt-install.sh $(TEST_APT_PACKAGES)

# The whole appliance on this machine (pool, control plane, ingestion worker,
# gateway) on ./.rlm, then the offline demo; Ctrl-C stops everything.
up: deps
	$(UV) run --frozen rlm-rs up --demo

demo: deps
	$(UV) run --frozen rlm-rs demo

# pytest exits 5 when it collected nothing: make fails on it like on any failure.
test: deps test-deps
	$(UV) run --frozen pytest -q $(PYTEST_ARGS)

lint: deps
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports
	$(MAKE) proto-lint

# buf lint over proto/ (buf.yaml), buf from npm as tools/buf/package-lock.json pins it.
proto-lint:
	@command -v npm >/dev/null 2>&1 || ./scripts/apt-install.sh nodejs npm
	npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error
	tools/buf/node_modules/.bin/buf lint

proto: deps
	./scripts/gen_proto.sh

# Builds the base image and all five images, runs the sandbox image and the compose
# stack as shipped (root with apt and Podman; see scripts/containers-test.sh).
containers-test:
	./scripts/containers-test.sh
