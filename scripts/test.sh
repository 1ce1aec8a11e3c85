#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: formatting,
# lints, the guests' and the host's unit tests, the integration tests (which
# load real plugins, hostile ones included, run the `switchboard` binary,
# place SIP calls to SIPp on loopback, mix real RTP on loopback with SIPp
# streaming a tone into one conference, and bill calls on SQLite and on a
# real PostgreSQL server, use the web pages in a real headless Chromium),
# and a short smoke run of the benchmarks. Installs SIPp (sip-tester),
# Kamailio, dnsmasq, Prosody, slixmpp, Chromium with ChromeDriver and PostgreSQL with
# apt-get when they are missing.
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

step "test peers: Kamailio (Debian package kamailio) as the carrier of tests/sip_trunk.rs"
if ! command -v kamailio >/dev/null 2>&1 || ! command -v kamcmd >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq kamailio >/dev/null
fi
# The test starts its own Kamailio on a free loopback port with a
# configuration it writes; a system one started by the package is not needed.
kamailio -v | head -1

step "test peers: dnsmasq (Debian package dnsmasq-base: the server without its system service) as the DNS server of tests/sip_dns.rs"
if ! command -v dnsmasq >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq dnsmasq-base >/dev/null
fi
# The tests start their own dnsmasq on a free loopback port, answering only
# for the test domain and forwarding nothing; no system one is installed.
dnsmasq --version | head -1

step "test peers: Prosody (XMPP server) and slixmpp (XMPP client, Debian python3-slixmpp)"
if ! command -v prosody >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import slixmpp' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq prosody python3-slixmpp >/dev/null
fi
# The tests start their own Prosody on a free loopback port; a system one
# started by the package is not needed.
/usr/bin/python3 -c 'import slixmpp; print("slixmpp", slixmpp.__version__)'

step "test peers: headless Chromium and ChromeDriver (Debian chromium, chromium-driver) for the web pages"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromium --version
chromedriver --version

step "test peers: PostgreSQL (the billing tests use a schema of their own on it)"
# SWITCHBOARD_TEST_POSTGRES names the server; by default the local one at
# 127.0.0.1:5432, database test. Where it does not answer, PostgreSQL is
# installed (Debian package postgresql), its cluster started, and the
# postgres role given a password for TCP logins.
pg_url="${SWITCHBOARD_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
pg_answers() { command -v psql >/dev/null 2>&1 && psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_answers "$pg_url"; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        "${as_root[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq postgresql >/dev/null
    fi
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    if ! pg_lsclusters -h | grep -q "^$version main"; then
        "${as_root[@]}" pg_createcluster "$version" main >/dev/null
    fi
    "${as_root[@]}" pg_ctlcluster "$version" main start 2>/dev/null || true
    as_postgres() { "${as_root[@]}" su postgres -c "$1"; }
    for _ in $(seq 30); do as_postgres "psql -Atqc 'select 1'" >/dev/null 2>&1 && break; sleep 1; done
    as_postgres "psql -qc \"ALTER USER postgres PASSWORD 'switchboard'\"" >/dev/null
    as_postgres "psql -Atqc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 \
        || as_postgres "createdb test"
    pg_url="postgres://postgres:switchboard@127.0.0.1:5432/test"
    pg_answers "$pg_url" || { echo "PostgreSQL at $pg_url does not answer"; exit 1; }
fi
export SWITCHBOARD_TEST_POSTGRES="$pg_url"
psql "$pg_url" -Atqc 'show server_version'

step "formatting"
cargo fmt --all -- --check

step "lints (first build: wasmtime and the guest plugins take a few minutes on 2 cores)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --workspace --locked

step "the systemd unit (deploy/switchboard.service), checked by systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq systemd >/dev/null
fi
# Checked against the binary just built (verify wants ExecStart to exist).
unit_dir="$(mktemp -d)"
sed "s#/usr/local/bin/switchboard#$PWD/target/debug/switchboard#" deploy/switchboard.service \
    > "$unit_dir/switchboard.service"
verify_out="$(systemd-analyze verify "$unit_dir/switchboard.service" 2>&1)" || {
    echo "$verify_out"; exit 1; }
# verify exits 0 on some warnings; any line naming the unit is one.
if printf '%s\n' "$verify_out" | grep -q 'switchboard.service'; then echo "$verify_out"; exit 1; fi
rm -rf "$unit_dir"
echo "deploy/switchboard.service verified"

step "benchmark smoke runs (figures for BENCHMARKS.md come from: cargo bench -p switchboard --bench plugins / sip_calls / media_mix / billing / chat_xmpp / sessions)"
# --workspace keeps feature unification identical to the step above, so
# nothing is rebuilt.
cargo test --workspace --bench plugins --locked -- --quick
cargo test --workspace --bench sip_calls --locked -- --quick
cargo test --workspace --bench media_mix --locked -- --quick
cargo test --workspace --bench billing --locked -- --quick
cargo test --workspace --bench chat_xmpp --locked -- --quick
cargo test --workspace --bench sessions --locked -- --quick

step "all tests passed"
