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

impl SippUas {
    /// Starts SIPp with `scenario`; call n's SDP names `media_ports[n]`
    /// (SIPp's own media port when the list is empty).
    pub fn start(scenario_name: &str, media_ports: &[u16]) -> SippUas {
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
        // SIPp's own RTP port, for scenarios that do not inject one.
        let media = {
            let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
            probe.local_addr().expect("addr").port()
        };
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &media.to_string(),
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start sipp ({e}); scripts/test.sh installs it (apt-get install sip-tester)"
            )
        });
        std::thread::sleep(Duration::from_millis(150));
        SippUas {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    /// SIPp's error log (unexpected messages, aborted calls).
    pub fn errors(&self) -> String {
        let mut log = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().contains("errors") {
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
