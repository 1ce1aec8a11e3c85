//! Real XMPP peers for the chat tests: a Prosody server on loopback with its
//! own configuration, data and accounts, and slixmpp clients
//! (`tests/chat/xmpp_client.py`) in their own processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The XMPP domain of the test server.
pub const DOMAIN: &str = "localhost";

/// A Prosody server on 127.0.0.1 with plaintext logins (loopback only).
pub struct Prosody {
    dir: tempfile::TempDir,
    /// Its client port.
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Prosody {
    /// Writes the configuration, registers `accounts` (name, password) and starts the server.
    pub fn start(accounts: &[(&str, &str)]) -> Prosody {
        Prosody::start_with(accounts, false)
    }

    /// The same, and with `tls` also a certificate for the domain from a
    /// test CA (`ca.crt` in [`Self::dir`]), so clients may use STARTTLS.
    pub fn start_with(accounts: &[(&str, &str)], tls: bool) -> Prosody {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssl = if tls {
            make_certificate(dir.path());
            let d = dir.path().display();
            format!(
                "ssl = {{ certificate = \"{d}/{DOMAIN}.crt\"; key = \"{d}/{DOMAIN}.key\" }}\n\
                 modules_enabled = {{ \"roster\"; \"saslauth\"; \"disco\"; \"ping\"; \"posix\"; \"offline\"; \"tls\" }}\n"
            )
        } else {
            String::new()
        };
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{d}/prosody.log" }} }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "posix"; "offline" }}
modules_disabled = {{ "s2s" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
limits = {{ c2s = {{ rate = "10mb/s"; burst = "2s" }} }}
{ssl}VirtualHost "{DOMAIN}"
"#
        );
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(dir.path().join("prosody.cfg.lua"), config).expect("config");
        let mut p = Prosody {
            dir,
            port,
            child: None,
        };
        for (name, password) in accounts {
            let status = Command::new("prosodyctl")
                .arg("--config")
                .arg(p.config())
                .args(["register", name, DOMAIN, password])
                .stdout(Stdio::null())
                .status()
                .expect("prosodyctl runs (apt-get install prosody)");
            assert!(status.success(), "prosodyctl register {name}");
        }
        p.spawn();
        p
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let child = Command::new("prosody")
            .arg("--config")
            .arg(self.config())
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "prosody did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (every client is disconnected).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A test CA and a certificate for [`DOMAIN`] signed by it, in `dir`.
fn make_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName=DNS:{DOMAIN}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("ext file");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=Switchboard test CA",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{DOMAIN}.key"),
        "-out",
        "leaf.csr",
        "-subj",
        &format!("/CN={DOMAIN}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &format!("{DOMAIN}.crt"),
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- prosody log (last 60 lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
    }
}

/// A slixmpp client process, driven by JSON lines.
pub struct User {
    /// Its bare address.
    pub jid: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Lines read while waiting for another, oldest first.
    backlog: Vec<serde_json::Value>,
}

impl User {
    /// Logs in as `name` and waits until its session is up.
    pub fn login(server: &Prosody, name: &str, password: &str) -> User {
        let jid = format!("{name}@{DOMAIN}");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/chat/xmpp_client.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([
                script,
                &jid,
                password,
                "127.0.0.1",
                &server.port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with slixmpp (apt-get install python3-slixmpp)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut user = User {
            jid,
            child,
            stdin,
            lines,
            backlog: Vec::new(),
        };
        user.expect(Duration::from_secs(20), |v| v["ready"] == true);
        user
    }

    /// Sends one command to the client.
    pub fn command(&mut self, cmd: serde_json::Value) {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .expect("client stdin");
    }

    /// Sends a chat message.
    pub fn say(&mut self, to: &str, body: &str) {
        self.command(serde_json::json!({"send": body, "to": to}));
    }

    /// Waits for a line that `matches` and returns it; lines that do not
    /// match are kept for later expectations.
    pub fn expect(
        &mut self,
        within: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(i) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if matches(&v) => return v,
                Ok(v) => self.backlog.push(v),
                Err(_) => panic!(
                    "{}: nothing expected arrived within {within:?}; got {:?}",
                    self.jid, self.backlog
                ),
            }
        }
    }

    /// Waits for the next chat message from `from` and returns its body.
    pub fn next_message(&mut self, from: &str, within: Duration) -> String {
        let v = self.expect(within, |v| v["from"] == from && v["message"].is_string());
        v["message"].as_str().unwrap_or_default().to_string()
    }

    /// Every line that arrives within `within`.
    pub fn collect(&mut self, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        let mut all = std::mem::take(&mut self.backlog);
        while let Ok(v) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            all.push(v);
        }
        all
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribes `user` to the bot the way a person does in their client,
/// and approves the bot's request back.
pub fn befriend(user: &mut User, bot: &str) {
    user.command(serde_json::json!({"subscribe": bot}));
    // The approval and the bot's own request, in whatever order they come.
    let (mut approved, mut asked) = (false, false);
    while !(approved && asked) {
        let v = user.expect(Duration::from_secs(15), |v| {
            v["subscribed"] == bot || v["subscribe"] == bot
        });
        approved |= v["subscribed"] == bot;
        asked |= v["subscribe"] == bot;
    }
    user.command(serde_json::json!({"approve": bot}));
}

/// The bot's account on `server` (`switchboard@localhost`, plaintext on loopback).
pub fn bot_config(server: &Prosody) -> switchboard::chat::xmpp::XmppConfig {
    switchboard::chat::xmpp::XmppConfig {
        jid: format!("switchboard@{DOMAIN}"),
        password: "bot-secret".into(),
        server: Some(format!("127.0.0.1:{}", server.port)),
        allow_plaintext: true,
        ..Default::default()
    }
}

/// The XMPP bot logged in to `server` in front of `service`, with the
/// sessions' later notices forwarded to it, as `switchboard run` does.
pub fn serve_bot(
    server: &Prosody,
    service: &mut switchboard::service::Service,
    plugins: &std::sync::Arc<switchboard::plugin::PluginHost>,
) -> std::sync::Arc<switchboard::chat::xmpp::XmppBot> {
    use std::sync::Arc;
    let bot = switchboard::chat::Bot::new(
        Arc::clone(plugins),
        service.manager.clone(),
        switchboard::chat::limit::RateLimit::default(),
        2000,
    );
    let xmpp = Arc::new(
        switchboard::chat::xmpp::XmppBot::start(bot_config(server), bot).expect("bot starts"),
    );
    let (_, empty) = tokio::sync::mpsc::unbounded_channel();
    let mut notices = std::mem::replace(&mut service.notices, empty);
    let forward = Arc::clone(&xmpp);
    tokio::spawn(async move {
        while let Some(n) = notices.recv().await {
            let _ = forward.notify(&n.to, n.event);
        }
    });
    xmpp
}
