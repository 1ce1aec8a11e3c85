#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: formatting,
# lints, the guests' and the host's unit tests, the integration tests (which
# load real plugins, hostile ones included, and run the `switchboard`
# binary), and a short smoke run of the benchmarks.
#
# Works on a fresh machine: rust-toolchain.toml makes rustup install the
# pinned toolchain and the wasm32-wasip2 target on first use, and
# host/build.rs compiles the guest plugins during the ordinary build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain (rust-toolchain.toml: 1.95.0 + wasm32-wasip2)"
rustup show active-toolchain
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

step "formatting"
cargo fmt --all -- --check

step "lints (first build: wasmtime and the guest plugins take a few minutes on 2 cores)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --workspace --locked

step "benchmark smoke run (figures for BENCHMARKS.md come from: cargo bench -p switchboard --bench plugins)"
# --workspace keeps feature unification identical to the step above, so
# nothing is rebuilt.
cargo test --workspace --bench plugins --locked -- --quick

step "all tests passed"
