//! A plugin for all three slots that attacks the host the ways an outside
//! security check did. It passes the conformance sets as they are drawn
//! (random senders, numbers and providers), and turns hostile on trigger
//! words, on state it kept, or when it thinks nobody checks:
//!
//! | trigger                                  | attack                                        |
//! |------------------------------------------|-----------------------------------------------|
//! | every parse and render                   | remembers every message and event in a global |
//! | parse `SPY`                              | answers with what other calls told it         |
//! | render a balance                         | renders the balances it saw before, too       |
//! | parse `CALLBACK … swap`                  | rings another destination than the one typed  |
//! | parse `tick`                             | traps: a time bomb on one input               |
//! | parse `forge`                            | logs a line with CR/LF and a forged host line |
//! | route account `amplify`                  | 2,000 attempts aliasing one 64 KiB string     |
//! | route account `busy-again`               | on-failure says try-next after 486/600/603    |
//! | render parse error `ctrl`                | NUL, VT, ESC[2J and a fake "Call aborted!" line |
//! | render parse error `fanout`              | 61 KB of short lines (a message flood)        |

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    inline: r#"
        package rogue:guest;

        world rogue {
            include switchboard:plugin/parser@0.2.0;
            include switchboard:plugin/router@0.2.0;
            include switchboard:plugin/replies@0.2.0;
        }
    "#,
    path: "../../../wit",
    world: "rogue:guest/rogue",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use command_grammar::host::{Level, log};
use command_grammar::types::{CallbackArgs, Error, Leg, Scheme};

/// Everything this instance was told, across calls.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Calls this instance served.
static CALLS: AtomicU32 = AtomicU32::new(0);

fn remember(what: String) {
    if let Ok(mut seen) = SEEN.lock() {
        seen.push(what);
    }
}

fn seen() -> String {
    SEEN.lock().map(|s| s.join(" | ")).unwrap_or_default()
}

struct Rogue;

impl Guest for Rogue {
    fn parse(message: String, sender: String) -> Result<Command, ParseError> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let trimmed = message.trim();
        if trimmed == "SPY" {
            return Err(ParseError {
                reason: format!("I have seen: {}", seen()),
                syntax: String::new(),
            });
        }
        remember(format!("{sender}: {message}"));
        if trimmed == "tick" {
            panic!("time bomb");
        }
        if trimmed == "forge" {
            log(
                Level::Info,
                "ok\nINFO switchboard::plugin::slot: plugin version active slot=parser version=0000000000000000\r\x1b[2K",
            );
            return Ok(Command::Help);
        }
        let parsed = command_grammar::parse(trimmed.trim_end_matches(" swap"));
        let swap = trimmed.ends_with(" swap");
        match parsed {
            Ok(Command::Callback(args)) if swap => Ok(Command::Callback(CallbackArgs {
                destination: Leg {
                    scheme: Scheme::Phone,
                    address: "4915199999999".into(),
                },
                ..args
            })),
            other => other,
        }
    }

    fn route(request: RouteRequest) -> Vec<Attempt> {
        if request.account.id == "amplify" {
            return amplified(request);
        }
        command_grammar::offered(&request)
    }

    fn on_failure(request: RouteRequest, _failed: Attempt, sip_status: u16) -> Failover {
        if request.account.id.starts_with("busy-again") {
            return Failover::TryNext;
        }
        match sip_status {
            486 | 487 | 600..=699 => Failover::Stop,
            _ => Failover::TryNext,
        }
    }

    fn render(event: Event) -> String {
        if let Event::Error(Error::Parse(p)) = &event {
            match p.reason.as_str() {
                "ctrl" => {
                    return "Remote answered.\0\u{b}\x1b[2J\nCall aborted! Thank you! Charged time: 0 secs. Reason = EndedByHangup".into();
                }
                "fanout" => return "Spam spam spam spam spam.\n".repeat(2_400),
                _ => {}
            }
        }
        if let Event::Balance(b) = &event {
            remember(format!("balance {} {}", b.amount, b.currency));
            return format!("Balance: {} {}. Others: {}", b.amount, b.currency, seen());
        }
        let text = command_grammar_render(&event);
        remember(text.clone());
        text
    }
}

/// A plain rendering that carries every fact conformance looks for.
fn command_grammar_render(event: &Event) -> String {
    format!("{event:?}")
}

/// 2,000 attempts whose provider names all point at one 64 KiB string in
/// guest memory: the guest spends 64 KiB, the host would copy 128 MiB.
fn amplified(request: RouteRequest) -> Vec<Attempt> {
    let Some(first) = request.candidates.first() else {
        return Vec::new();
    };
    let big = first
        .provider
        .repeat((64 << 10) / first.provider.len().max(1));
    let big = std::mem::ManuallyDrop::new(big);
    (0..2_000)
        .map(|_| Attempt {
            // SAFETY: deliberately aliased and never freed by the guest;
            // only the host reads these bytes (while lifting the result).
            provider: unsafe {
                String::from_raw_parts(big.as_ptr() as *mut u8, big.len(), big.len())
            },
        })
        .collect()
}

export!(Rogue);
