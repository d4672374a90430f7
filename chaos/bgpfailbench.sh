#!/usr/bin/env bash
# BGP failure benchmark (root, BGP.md §4b B2): kill -9, silent cut with BFD 100 ms x 3 and
# without (hold 9 s and 3 s), drain and a graceful restart on one of three nodes, BIRD 2 as
# the router, a TCP probe every 10 ms through its ECMP route. Prints figures; asserts nothing.
# Usage: bash chaos/bgpfailbench.sh [--runs 5] [--kinds kill9,bfd,hold9,hold3,drain,gr]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v bird >/dev/null || need+=(bird2)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -q -p raftlb-node --bin raftlb
cargo build --release -q -p raftlb-chaos --bin raftlb-labd --bin raftlb-bgpfail
exec target/release/raftlb-bgpfail "$@"
