//! A plugin for all three slots that behaves well on ordinary input (it
//! passes every slot's conformance set) and misbehaves on trigger words,
//! the way a buggy or malicious plugin would after it has been loaded:
//!
//! | trigger                                   | behaviour                         |
//! |-------------------------------------------|-----------------------------------|
//! | parse `loop`, route account `loop`        | spins forever                     |
//! | parse `bomb`, render parse error `bomb`   | allocates until memory runs out   |
//! | parse `recurse`                           | unbounded recursion               |
//! | parse `panic`, route account `panic`      | panics                            |
//! | parse `huge`, render parse error `huge`   | returns a 4 MiB answer            |
//! | parse `bad`                               | returns a phone leg with letters  |
//! | parse `flood`                             | logs 100,000 long lines           |
//! | parse `slow`                              | spins about a second, then HELP   |
//! | route account `bogus`                     | routes via a provider not offered |
//! | render parse error `empty`                | renders an empty reply            |

// The bindings generated for three worlds at once have export shims with
// many arguments.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    inline: r#"
        package hostile:guest;

        world hostile {
            include switchboard:plugin/parser@0.2.0;
            include switchboard:plugin/router@0.2.0;
            include switchboard:plugin/replies@0.2.0;
        }
    "#,
    path: "../../../wit",
    world: "hostile:guest/hostile",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

use command_grammar::host::{Level, log};
use command_grammar::types::{Error, Leg, Scheme};
use std::hint::black_box;

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn bomb() -> usize {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![black_box(1u8); 1 << 20]);
        black_box(&hoard);
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let local = [black_box(depth); 16];
    black_box(recurse(depth + 1)).wrapping_add(local[black_box(3)])
}

struct Hostile;

impl Guest for Hostile {
    fn parse(message: String, _sender: String) -> Result<Command, ParseError> {
        match message.trim() {
            "loop" => spin(),
            "bomb" => Err(ParseError {
                reason: bomb().to_string(),
                syntax: String::new(),
            }),
            "recurse" => Err(ParseError {
                reason: recurse(0).to_string(),
                syntax: String::new(),
            }),
            "panic" => panic!("hostile parser panics on purpose"),
            "huge" => Err(ParseError {
                reason: "x".repeat(4 << 20),
                syntax: String::new(),
            }),
            "bad" => Ok(Command::Del(Leg {
                scheme: Scheme::Phone,
                address: "call-me-maybe".into(),
            })),
            "slow" => {
                for i in 0..1_000_000_000u64 {
                    black_box(i);
                }
                Ok(Command::Help)
            }
            "flood" => {
                let line = "y".repeat(10_000);
                for _ in 0..100_000 {
                    log(Level::Info, &line);
                }
                Ok(Command::Help)
            }
            other => command_grammar::parse(other),
        }
    }

    fn route(request: RouteRequest) -> Vec<Attempt> {
        match request.account.id.as_str() {
            "loop" => spin(),
            "panic" => panic!("hostile router panics on purpose"),
            "bogus" => {
                return vec![Attempt {
                    provider: "NOWHERE".into(),
                }];
            }
            _ => {}
        }
        command_grammar::offered(&request)
    }

    fn on_failure(_request: RouteRequest, _failed: Attempt, sip_status: u16) -> Failover {
        match sip_status {
            486 | 487 | 600..=699 => Failover::Stop,
            _ => Failover::TryNext,
        }
    }

    fn render(event: Event) -> String {
        if let Event::Error(Error::Parse(p)) = &event {
            match p.reason.as_str() {
                "loop" => spin(),
                "bomb" => return bomb().to_string(),
                "empty" => return String::new(),
                "huge" => return "x".repeat(4 << 20),
                _ => {}
            }
        }
        format!("{event:?}")
    }
}

export!(Hostile);
