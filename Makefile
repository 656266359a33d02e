# Two commands for a newcomer: `make up` (the appliance, with a demo) and
# `make test` (the whole suite). Both install uv and the locked environment.
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: deps up demo test lint proto

deps:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv \
		|| python3 -m pip install --user --quiet uv 2>/dev/null \
		|| python3 -m pip install --user --quiet --break-system-packages uv 2>/dev/null \
		|| curl -LsSf https://astral.sh/uv/install.sh | sh
	$(UV) sync --frozen

# The whole appliance on this machine (pool, control plane, ingestion worker,
# gateway) on ./.rlm, then the offline demo; Ctrl-C stops everything.
up: deps
	$(UV) run --frozen rlm-rs up --demo

demo: deps
	$(UV) run --frozen rlm-rs demo

test: deps
	$(UV) run --frozen pytest -q

lint: deps
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

proto: deps
	./scripts/gen_proto.sh
