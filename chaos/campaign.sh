#!/usr/bin/env bash
# Chaos campaign (root): a seeded plan of faults over real raftlb processes in the namespace
# lab, checked for a single answerer per VIP (at the client and in the nodes' audit), failover
# and darkness bounds, the allocation rules and a replay of every read, agreement of every
# table after the heal, liveness and panics (BGP mode: the router's routes after every heal).
# Release builds; writes DIR/summary.md and DIR/timeline.html.
# Usage: bash chaos/campaign.sh --seed S --faults N [--profile default|fast] [--from K]
#        --out DIR [--mode l2|bgp|bgp-bfd] [--chunk 25] [--kinds ...]
#        [--negative-control answer-without-lease|no-fsync|slow-clock]
#        bash chaos/campaign.sh check DIR
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v tc >/dev/null || need+=(iproute2)
# BGP mode judges the routes by BIRD's RIB.
command -v bird >/dev/null || need+=(bird2)
# The slow-clock negative control preloads libfaketime into one node.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(libfaketime)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -q -p raftlb-node --bin raftlb
cargo build --release -q -p raftlb-chaos --bin raftlb-labd --bin raftlb-chaos
if [[ "${1:-}" == check ]]; then
  exec target/release/raftlb-chaos "$@"
fi
exec target/release/raftlb-chaos campaign "$@"
