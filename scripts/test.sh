#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: formatting,
# lints, the guests' and the host's unit tests, the integration tests (which
# load real plugins, hostile ones included, run the `switchboard` binary,
# place SIP calls to SIPp on loopback, and mix real RTP on loopback, with
# SIPp streaming a tone into one conference), and a short smoke run of the
# benchmarks. Installs SIPp (sip-tester) with apt-get when it is missing.
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

step "test peers: SIPp (Debian package sip-tester)"
if ! command -v sipp >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq sip-tester >/dev/null
fi
{ sipp -v 2>&1 || true; } | grep -m1 SIPp   # sipp -v exits with status 99

step "formatting"
cargo fmt --all -- --check

step "lints (first build: wasmtime and the guest plugins take a few minutes on 2 cores)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --workspace --locked

step "benchmark smoke runs (figures for BENCHMARKS.md come from: cargo bench -p switchboard --bench plugins / sip_calls / media_mix)"
# --workspace keeps feature unification identical to the step above, so
# nothing is rebuilt.
cargo test --workspace --bench plugins --locked -- --quick
cargo test --workspace --bench sip_calls --locked -- --quick
cargo test --workspace --bench media_mix --locked -- --quick

step "all tests passed"
