# Sourced by the scripts in scripts/: sets UV to the uv binary, found the way the
# Makefile finds it (uv run's own $UV, then PATH, then ~/.local/bin where `make deps`
# installs it), so a script works on a fresh machine where uv is not on PATH.
# Never installs anything: `make deps` does that.
UV=${UV:-$(command -v uv 2>/dev/null || echo "$HOME/.local/bin/uv")}
if [ ! -x "$UV" ]; then
  echo "uv not found (not on PATH, not in ~/.local/bin): run 'make deps' first" >&2
  exit 127
fi
export UV UV_PYTHON_DOWNLOADS=${UV_PYTHON_DOWNLOADS:-never}
