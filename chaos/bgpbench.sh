#!/usr/bin/env bash
# BGP announce benchmark (root): N /32s until BIRD holds them all, for raftlb's speaker alone,
# raftlb end to end (3 peers, apply through ctl) and GoBGP 3 (mrt inject, rib-add loop).
# Prints figures; asserts nothing. Usage: bash chaos/bgpbench.sh [--sizes 1000,10000] [--runs 5]
# [--only speaker,e2e,gobgp]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v bird >/dev/null || need+=(bird2)
command -v gobgpd >/dev/null || need+=(gobgpd)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -q -p raftlb-node --bin raftlb
cargo build --release -q -p raftlb-chaos --bin raftlb-labd --bin raftlb-bgpbench
exec target/release/raftlb-bgpbench "$@"
