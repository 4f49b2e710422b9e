#!/usr/bin/env bash
# `make demo`: build a lab cluster, show what it is made of, tear it down.
# DEMO_KEEP=1 leaves the lab up afterwards (margay-lab --state-dir $DIR down removes it).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
DIR=${DEMO_STATE_DIR:-/tmp/margay-demo}
LAB=("$BIN/margay-lab" --state-dir "$DIR")
export MARGAY_BIN_DIR=$PWD/$BIN

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

cleanup() {
  if [[ "${DEMO_KEEP:-0}" != 1 ]]; then
    bold "Tearing the lab down"
    "${LAB[@]}" down
  else
    echo "lab left up: ${LAB[*]} status"
  fi
}

"${LAB[@]}" down >/dev/null 2>&1 || true
trap cleanup EXIT

bold "Building a 3-node lab cluster (l2 topology)"
run "${LAB[@]}" up --nodes 3 --topology l2

bold "What node1 looks like inside"
run "${LAB[@]}" exec node1 -- ip -br addr
run "${LAB[@]}" exec node1 -- ip route
run "${LAB[@]}" exec node1 -- ip -6 route show default

bold "Nodes reach each other"
for to in 10.0.0.2 10.0.0.3 fd00:10::3; do
  "${LAB[@]}" exec node1 -- ping -c1 -W2 "$to" | grep -E 'bytes from' || { echo "node1 cannot reach $to"; exit 1; }
done

if KC=$("${LAB[@]}" kubeconfig 2>/dev/null); then
  bold "The cluster's API server, through kubectl"
  run kubectl --kubeconfig "$KC" get nodes -o wide
  run kubectl --kubeconfig "$KC" get namespaces
  run kubectl --kubeconfig "$KC" get ippools

  bold "margay-agent on every node: ready, CNI conflist installed, metrics"
  for n in node1 node2 node3; do
    printf '%s: ' "$n"; "${LAB[@]}" exec "$n" -- curl -s 127.0.0.1:9099/readyz
  done
  run cat "$DIR/nodes/node1/net.d/10-margay.conflist"
  "${LAB[@]}" exec node1 -- curl -s 127.0.0.1:9091/metrics | grep -E '^margay_(datastore_in_sync|active_local_endpoints|ipam_gc_leader) '
fi

bold "The lab's processes"
run "${LAB[@]}" status
