#!/usr/bin/env bash
# Load benchmark of `tensorlet serve`, in one run on this machine:
#
#   bash benches/load/run.sh [SECONDS_PER_RUN] [CONNECTIONS]     (defaults 5 and 4)
#
# Builds tensorlet and the load generator (benches/examples/load.rs: closed-loop
# keep-alive HTTP/1.1 clients, nothing to install), then measures requests/s and p50/p99
# latency of mlp and mnist-cnn batch 1 over HTTP JSON and binary against a real server on
# loopback, beside the same requests run in-process with no HTTP and a bare hyper server
# answering a fixed body of the same size; then p99/p50 at 80% of peak (open loop), a hot
# swap every second during a run, and start-to-ready time. Prints a markdown table with
# the issue's targets.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN="${1:-5}"
CONNECTIONS="${2:-4}"
# Built as the README's test command builds them (it builds every binary and example): a
# `cargo build -p tensorlet-benches` alone unifies other features and compiles the kernels
# a second time.
cargo test --release --quiet --workspace --no-run
target/release/examples/load --tensorlet target/release/tensorlet --seconds "$SECONDS_PER_RUN" \
    --connections "$CONNECTIONS"
