#!/usr/bin/env bash
# Partition assignment (core/src/partitions.rs): time to assign 1024
# partitions × R among N nodes in Z zones, balance (largest share over the
# share its capacity asks) and, for one node joining, the pairs moved over
# the optimum (the joiner's share R·P·c_new/Σc). Pure CPU, no cluster.
#
# Usage: bash bench/placement.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q --release --locked -p rondo-core --example assign
