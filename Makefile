# Two commands for a newcomer: `make up` (the appliance, with a demo) and
# `make test` (the whole suite). Both install uv and the locked environment.
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: deps up demo test lint proto

deps:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen

# Until `rlm-rs up` lands (issue 6) the appliance is its hardened sandbox:
# report the isolation layers, then run a demo step through a fresh pool.
up: deps
	$(UV) run --frozen rlm-rs sandbox doctor
	$(UV) run --frozen rlm-rs sandbox run --code examples/quickstart_step.py \
		--doc examples/corpus/annual_report.txt

test: deps
	$(UV) run --frozen pytest -q

lint: deps
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

proto: deps
	./scripts/gen_proto.sh
