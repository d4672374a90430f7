//! raftlb-actors: the announcement side (per-Service and per-VIP actors, ARP/NDP responders,
//! BGP sessions). Empty until the layer-2 milestone; it stays a leaf crate that does not depend
//! on raft-store, and gets what it needs through messages.
