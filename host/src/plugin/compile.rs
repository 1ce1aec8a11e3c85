//! Compiling a candidate component in a child process under a memory and a
//! CPU-time limit (`setrlimit` `RLIMIT_AS` and `RLIMIT_CPU`) and a wall-clock
//! timeout, so a component built to make the compiler take minutes and
//! gigabytes costs the host a refusal, not its memory or its reloads.
//!
//! The child is the `switchboard` binary itself (`switchboard plugin
//! compile-worker`): it reads the component on stdin, checks its shape,
//! compiles it with the engine settings of the slot, and writes wasmtime's
//! serialized form on stdout, which the host loads with
//! `Component::deserialize`. wasmtime refuses serialized code made with
//! other engine settings or another wasmtime version.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Strategy};

use super::{Limits, PluginError, precheck, sandbox};

/// The subcommand of the host binary that compiles one component.
const WORKER_ARGS: [&str; 2] = ["plugin", "compile-worker"];

/// Compiles `bytes` in a child process of `program` under the limits'
/// compile budget; returns wasmtime's serialized code.
pub(crate) fn in_child(
    program: &Path,
    limits: &Limits,
    bytes: &[u8],
) -> Result<Vec<u8>, PluginError> {
    let settings = serde_json::to_string(limits)
        .map_err(|e| PluginError::Engine(format!("cannot pass the limits to the compiler: {e}")))?;
    let memory = limits.compile_memory_bytes;
    let cpu = limits.compile_cpu_secs.max(1);
    let mut command = Command::new(program);
    command
        .args(WORKER_ARGS)
        .arg(settings)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "error");
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_AS, memory, memory).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_CPU, cpu, cpu + 1).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        PluginError::Engine(format!(
            "cannot start the compiler {}: {e}",
            program.display()
        ))
    })?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(PluginError::Engine("the compiler has no pipes".into()));
    };
    let input = bytes.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(64 << 10).read_to_string(&mut text);
        text
    });
    let wall = Duration::from_secs(cpu.saturating_mul(2).saturating_add(5));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > wall => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PluginError::Engine(format!(
                    "waiting for the compiler: {e}"
                )));
            }
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    let mib = memory >> 20;
    let Some(status) = status else {
        return Err(PluginError::CompileBudget(format!(
            "compiling took longer than {} s",
            wall.as_secs()
        )));
    };
    if status.success() {
        return Ok(out);
    }
    let cause = errors
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    match status.signal() {
        Some(s) if s == libc_signal::SIGXCPU || s == libc_signal::SIGKILL => Err(
            PluginError::CompileBudget(format!("compiling needed more than {cpu} s of CPU")),
        ),
        Some(s) if s == libc_signal::SIGABRT || s == libc_signal::SIGSEGV => {
            Err(PluginError::CompileBudget(format!(
                "compiling needed more than {mib} MiB of memory{}",
                if cause.is_empty() {
                    String::new()
                } else {
                    format!(" ({cause})")
                }
            )))
        }
        _ if cause.starts_with(REFUSAL) => Err(PluginError::Compile(
            cause.trim_start_matches(REFUSAL).trim().to_string(),
        )),
        _ if cause.contains("memory allocation") || cause.contains("Cannot allocate") => {
            Err(PluginError::CompileBudget(format!(
                "compiling needed more than {mib} MiB of memory ({cause})"
            )))
        }
        _ => Err(PluginError::Compile(format!(
            "the compiler failed ({status}): {cause}"
        ))),
    }
}

/// Signal numbers of Linux (x86-64 and aarch64 agree on these).
mod libc_signal {
    pub const SIGABRT: i32 = 6;
    pub const SIGKILL: i32 = 9;
    pub const SIGSEGV: i32 = 11;
    pub const SIGXCPU: i32 = 24;
}

/// How the worker starts the line that gives a refusal's reason.
const REFUSAL: &str = "refused:";

/// The worker: reads a component on stdin, compiles it under `settings`
/// (the limits as JSON) and writes the serialized code on stdout. On a
/// refusal it writes `refused: <reason>` on stderr and fails.
pub fn compile_worker(settings: &str) -> Result<(), PluginError> {
    let refuse = |why: String| PluginError::Compile(why);
    let limits: Limits =
        serde_json::from_str(settings).map_err(|e| refuse(format!("bad limits: {e}")))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(limits.component_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read the component: {e}")))?;
    let result = (|| {
        precheck::check(&bytes, &limits)?;
        let mut config = sandbox::engine_config(&limits, false);
        config.strategy(Strategy::Cranelift);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let component = Component::new(&engine, &bytes).map_err(|e| refuse(format!("{e:#}")))?;
        component.serialize().map_err(|e| refuse(format!("{e:#}")))
    })();
    match result {
        Ok(code) => std::io::stdout()
            .write_all(&code)
            .map_err(|e| refuse(format!("cannot write the code: {e}"))),
        Err(e) => {
            eprintln!("{REFUSAL} {e}");
            Err(e)
        }
    }
}

/// The program the host runs as its compiler: `program` when it exists.
pub(crate) fn program(program: PathBuf) -> Result<PathBuf, PluginError> {
    if program.is_file() {
        Ok(program)
    } else {
        Err(PluginError::Engine(format!(
            "no compiler program at {}",
            program.display()
        )))
    }
}
