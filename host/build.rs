//! Compiles the plugins under `guest-examples/` and the test guests under
//! `tests/guests/` for `wasm32-wasip2`, so the host can embed its three
//! default plugins and the tests can load the others. A fresh clone needs
//! nothing but `cargo build`.
//!
//! The guests are built by a nested cargo into a target directory of their
//! own (`target/guests`), with the workspace's `guest` profile.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Every guest crate, by package name.
const GUESTS: &[&str] = &[
    "parser-default",
    "parser-aliases",
    "router-default",
    "router-least-cost",
    "replies-default",
    "replies-de",
    "hostile-guest",
    "snooper-guest",
    "rogue-guest",
    "evader-guest",
];

/// The guests the host embeds, as (file name in OUT_DIR, crate's wasm name).
const EMBEDDED: &[(&str, &str)] = &[
    ("parser.wasm", "parser_default.wasm"),
    ("router.wasm", "router_default.wasm"),
    ("replies.wasm", "replies_default.wasm"),
];

/// What the outer build sets that must not leak into the nested one.
const SCRUBBED: &[&str] = &[
    // The guests always build with the toolchain rust-toolchain.toml pins
    // (it has the wasm32-wasip2 target), even when the host is built by
    // another one, e.g. `cargo +nightly fuzz`: the nested cargo then finds
    // `rustc` through rustup, which reads rust-toolchain.toml.
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "OUT_DIR",
    "RUSTC_LINKER",
    "CARGO_PRIMARY_PACKAGE",
];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host/ lives inside the workspace")
        .to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => root.join("target").join("guests"),
    };

    for path in [
        "wit",
        "guest-examples",
        "tests/guests",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
            "--target-dir",
        ])
        .arg(&target_dir);
    for guest in GUESTS {
        build.args(["-p", guest]);
    }
    for var in SCRUBBED {
        build.env_remove(var);
    }
    for (var, _) in env::vars_os() {
        if var.to_string_lossy().starts_with("CARGO_CFG_")
            || var.to_string_lossy().starts_with("CARGO_PKG_")
            || var.to_string_lossy().starts_with("CARGO_FEATURE_")
        {
            build.env_remove(var);
        }
    }
    let status = build
        .status()
        .expect("cannot start cargo to build the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins for wasm32-wasip2 failed ({status}); \
         is the wasm32-wasip2 target installed (rust-toolchain.toml lists it)?"
    );

    let wasm_dir = target_dir.join("wasm32-wasip2").join("guest");
    for (name, built) in EMBEDDED {
        std::fs::copy(wasm_dir.join(built), out.join(name))
            .unwrap_or_else(|e| panic!("copying {built} into OUT_DIR: {e}"));
    }
    println!(
        "cargo:rustc-env=SWITCHBOARD_GUESTS_DIR={}",
        wasm_dir.display()
    );
}
