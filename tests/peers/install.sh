#!/usr/bin/env bash
# Installs the real MCP peers used by the end-to-end tests:
#   node_modules/  from package-lock.json (npm ci)
#   .venv/         from requirements.txt  (python3 -m venv + pip)
# Idempotent: each half is skipped while a stamp of its inputs still matches, so CI can
# call this on every run. Needs node >= 20, npm and python3 >= 3.10; as root on Debian it
# installs python3-venv when the venv module is missing.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "install.sh: $*" >&2; exit 1; }

for tool in node npm python3; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node >= 20 required, found $(node --version)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "python3 >= 3.10 required"

npm_stamp=$(node --version | cat - package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat node_modules/.peers-stamp 2>/dev/null)" != "$npm_stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$npm_stamp" > node_modules/.peers-stamp
fi

make_venv() {
  rm -rf .venv
  python3 -m venv .venv
}

py_stamp=$(python3 -VV | cat - requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.peers-stamp 2>/dev/null)" != "$py_stamp" ]; then
  # Debian ships venv without ensurepip unless python3-venv is installed.
  if ! make_venv >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null \
      || die "python3 -m venv failed; install python3-venv (or the distribution's equivalent)"
    echo "install.sh: python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    make_venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$py_stamp" > .venv/.peers-stamp
fi

echo "MCP peers ready in $(pwd)"
