//! dnsmasq (Debian package `dnsmasq-base`) as the DNS server of a test
//! domain on a free loopback port: the records a test gives, NXDOMAIN for
//! every other name under `.test`, nothing forwarded anywhere
//! (`--no-resolv`), answers valid for one second (`--local-ttl=1`) unless
//! told otherwise. It listens on UDP and TCP, so a truncated answer is
//! asked again over TCP. Also used by `bench/sip_calls.rs`.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with `records`: dnsmasq options such as
    /// `--srv-host=_sip._udp.carrier.test,a.carrier.test,5060,10,10`,
    /// `--host-record=a.carrier.test,127.0.0.1` or
    /// `--naptr-record=carrier.test,10,10,s,SIP+D2T,,_sip._tcp.carrier.test`.
    pub fn start(records: &[String]) -> Dnsmasq {
        Self::start_with_ttl(records, 1)
    }

    /// [`Dnsmasq::start`] with answers valid for `ttl_secs`.
    pub fn start_with_ttl(records: &[String], ttl_secs: u32) -> Dnsmasq {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port")
                .port();
            let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log file");
            let mut child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    "--user=root",
                    "--group=root",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--local=/test/",
                    "--log-queries",
                    "--log-facility=-",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={ttl_secs}"))
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run dnsmasq ({e}); scripts/test.sh installs it (apt-get install dnsmasq)")
                });
            let dnsmasq = Dnsmasq {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                child: {
                    std::thread::sleep(Duration::from_millis(100));
                    match child.try_wait() {
                        Ok(None) => child,
                        _ => {
                            let _ = child.wait();
                            continue;
                        }
                    }
                },
            };
            dnsmasq.wait_ready();
            return dnsmasq;
        }
        panic!("dnsmasq does not start");
    }

    /// Waits until it answers a query.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // A query for `ready.test` A (NXDOMAIN is an answer too).
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = socket.send_to(&query, self.addr);
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("dnsmasq does not answer: {}", self.log());
    }

    /// Its log: every query and its answer.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Stops it: from now on its names resolve no more.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
