//! SIPp (Debian package `sip-tester`) as a provider's far end, for
//! end-to-end tests: a scenario from `tests/sessions/`, on a free loopback
//! port, with the RTP port of each call's SDP answer taken in turn from a
//! list (SIPp's `-inf` injection: `[field0]`).
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running SIPp UAS.
pub struct SippUas {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The scenario file `name` of `tests/sessions/`, or of `tests/sip/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let own = root.join("tests/sessions").join(name);
    if own.exists() {
        own
    } else {
        root.join("tests/sip/scenarios").join(name)
    }
}

/// SIPp binds its own RTP ports (the `-mp` port and the one two above it)
/// even when a scenario does not use them. Ports from the ephemeral range
/// could be taken by then (by another test's sockets), so each SIPp gets
/// its own block of four from 10000–19999, which nothing else here uses.
fn media_block() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2500;
    10_000 + n * 4
}

impl SippUas {
    /// Starts SIPp with `scenario`; call n's SDP names `media_ports[n]`
    /// (SIPp's own media port when the list is empty). A SIPp that exits at
    /// once (a port taken after all) is started again on other ports.
    pub fn start(scenario_name: &str, media_ports: &[u16]) -> SippUas {
        Self::start_with(scenario_name, media_ports, &[])
    }

    /// [`SippUas::start`] with more SIPp arguments (`["-t", "t1"]`: TCP).
    pub fn start_with(scenario_name: &str, media_ports: &[u16], args: &[&str]) -> SippUas {
        for _ in 0..5 {
            let mut sipp = Self::spawn(scenario_name, media_ports, args);
            std::thread::sleep(Duration::from_millis(150));
            match sipp.child.try_wait() {
                Ok(None) => return sipp,
                _ => eprintln!(
                    "sipp exited at once ({}); trying other ports",
                    sipp.errors()
                ),
            }
            let _ = sipp.child.wait();
        }
        panic!("sipp does not start");
    }

    fn spawn(scenario_name: &str, media_ports: &[u16], args: &[&str]) -> SippUas {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = {
            let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
            probe.local_addr().expect("addr").port()
        };
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf").arg(scenario(scenario_name));
        if !media_ports.is_empty() {
            let mut csv = String::from("SEQUENTIAL\n");
            for p in media_ports {
                csv.push_str(&format!("{p};\n"));
            }
            let inf = dir.path().join("ports.csv");
            std::fs::write(&inf, csv).expect("injection file");
            cmd.arg("-inf").arg(inf);
        }
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &media_block().to_string(),
            "-nostdin",
            "-trace_err",
            "-trace_msg",
        ])
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start sipp ({e}); scripts/test.sh installs it (apt-get install sip-tester)"
            )
        });
        SippUas {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    /// SIPp's error log (unexpected messages, aborted calls).
    pub fn errors(&self) -> String {
        self.log("errors")
    }

    /// Every message SIPp sent and received (`-trace_msg`).
    pub fn messages(&self) -> String {
        self.log("messages")
    }

    /// The request lines of the INVITEs SIPp received.
    pub fn invites(&self) -> Vec<String> {
        self.messages()
            .lines()
            .filter(|l| l.starts_with("INVITE "))
            .map(str::to_string)
            .collect()
    }

    fn log(&self, kind: &str) -> String {
        let mut log = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().contains(kind) {
                log.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        log
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
