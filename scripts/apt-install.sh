#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet
# (`make test` needs Chromium for the trace-viewer tests, libseccomp2 for the sandbox's
# seccomp layer, iproute2 for the network-namespace checks). Runs apt only as root on a
# machine with apt-get; anywhere else it names what is missing and leaves the machine alone.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing Debian packages: ${missing[*]} (install them as root; tests that need them fail)" >&2
fi
