//! Kamailio (Debian package `kamailio`) on loopback as a carrier, for
//! end-to-end tests: a registrar that demands digest authentication for
//! REGISTER and INVITE and refuses calls from an account that is not
//! registered (403), relaying the rest to a far end standing for the phone
//! network. The configuration is written here; `kamcmd` reads its state.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The one account the registrar takes.
pub const ACCOUNT: &str = "acct";
/// Every account's password.
pub const PASSWORD: &str = "s3cret";

/// A running Kamailio with its control socket.
pub struct Kamailio {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    ctl: String,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio as the carrier: registrar for `ACCOUNT`, proxy to `phone_network`.
    pub fn start(phone_network: SocketAddr) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let ctl = format!("{}/kamailio_ctl", dir.path().display());
        let cfg = config(port, &ctl, phone_network);
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).expect("write kamailio.cfg");
        let check = Command::new("kamailio")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run kamailio ({e}); scripts/test.sh installs it (apt-get install kamailio)")
            });
        assert!(
            check.status.success(),
            "kamailio -c refuses the test configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&path)
            .args(["-Y", &dir.path().display().to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("kamailio.log")).expect("log file"),
            ))
            .spawn()
            .expect("kamailio starts");
        let kamailio = Kamailio {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ctl,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&kamailio.ctl).exists() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start: {}",
                kamailio.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kamailio
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// `kamcmd` against this Kamailio.
    pub fn kamcmd(&self, args: &[&str]) -> String {
        let out = Command::new("kamcmd")
            .args(["-s", &format!("unix:{}", self.ctl)])
            .args(args)
            .output()
            .expect("kamcmd runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The registrar's count of accepted REGISTERs.
    pub fn accepted_registrations(&self) -> u64 {
        let text = self.kamcmd(&["stats.get_statistics", "all"]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("registrar:accepted_regs = "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, ctl: &str, phone_network: SocketAddr) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "ctl.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 2)
modparam("ctl", "binrpc", "unix:{ctl}")

request_route {{
    xlog("L_INFO", "REQ $rm $ru cseq=$cs from $si:$sp au=$au\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "{PASSWORD}", "0")) {{ www_challenge("$td", "0"); exit; }}
        if ($au != "{ACCOUNT}") {{ sl_send_reply("403", "Forbidden"); exit; }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("$fd", "{PASSWORD}", "0")) {{ proxy_challenge("$fd", "0"); exit; }}
        if (!registered("location", "sip:$au@127.0.0.1")) {{
            sl_send_reply("403", "Forbidden (not registered)");
            exit;
        }}
        consume_credentials();
        record_route();
        $du = "sip:{phone_network}";
        if (!t_relay()) {{ xlog("L_ERR", "relay failed\n"); sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}

onreply_route {{
    xlog("L_INFO", "REPLY $rs $rr for $cs $rm from $si:$sp\n");
}}
"#
    )
}
