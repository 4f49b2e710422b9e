#!/usr/bin/env bash
# Installs the PyPI package kubernetes-validate (Kubernetes JSON schemas, offline)
# into a venv under target/tools, idempotently. Prints the path of the
# `kubernetes-validate` command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Tests may call this concurrently: one installer at a time.
mkdir -p "$root/target/tools"
exec 9>"$root/target/tools/.install.lock"
flock 9
venv="$root/target/tools/kubernetes-validate-venv"
bin="$venv/bin/kubernetes-validate"
if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
echo "install-kubernetes-validate: installing kubernetes-validate into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet kubernetes-validate >&2
"$bin" --version >&2
echo "$bin"
