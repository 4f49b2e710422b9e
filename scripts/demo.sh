#!/usr/bin/env bash
# `make demo`: build a lab cluster, show what it is made of (nodes, the API
# server, agents, pods on three nodes over BGP-learned routes, a NetworkPolicy
# cutting one path, margayctl node status), tear it down.
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

  bold "Pods on all three nodes (CNI ADD through margay-cni and the agent's IPAM)"
  run "${LAB[@]}" namespace create demo --labels ns=demo
  for i in 1 2 3; do
    run "${LAB[@]}" pod create demo/web$i --node node$i --labels app=web,pod=web$i --serve tcp:80
  done
  run "${LAB[@]}" pod create demo/client --node node1 --labels app=client --serve tcp:80
  run kubectl --kubeconfig "$KC" get pods -n demo -o wide

  bold "Routes to other nodes' pod blocks, learned over BGP (proto 88, via the node)"
  run "${LAB[@]}" exec node1 -- ip route show proto 88
  # Sessions come up within seconds of the agents; show them once they have.
  for _ in $(seq 30); do
    [[ $("${LAB[@]}" exec node1 -- "$PWD/$BIN/margayctl" node status | grep -c Established) -ge 2 ]] && break
    sleep 1
  done
  run "${LAB[@]}" exec node1 -- "$PWD/$BIN/margayctl" node status

  bold "Every pod reaches every pod, across nodes"
  run "${LAB[@]}" matrix --namespaces demo --protocols tcp

  bold "A NetworkPolicy: only the client may reach web2"
  policy=$(mktemp)
  cat >"$policy" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web2-from-client, namespace: demo}
spec:
  podSelector: {matchLabels: {pod: web2}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports: [{protocol: TCP, port: 80}]
YAML
  run cat "$policy"
  run kubectl --kubeconfig "$KC" apply -f "$policy"
  rm -f "$policy"
  run "${LAB[@]}" matrix --namespaces demo --protocols tcp
  run "$BIN/margayctl" --kubeconfig "$KC" policy explain demo/web1 demo/web2 --port 80
  run "$BIN/margayctl" --kubeconfig "$KC" policy explain demo/client demo/web2 --port 80
fi

bold "The lab's processes"
run "${LAB[@]}" status
