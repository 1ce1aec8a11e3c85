//! Each slot's conformance set: golden inputs with the outcomes any version
//! of that slot must produce before it may replace the running one.
//!
//! The sets pin down what the seed requires and leave room for what
//! operators change: a parser may add aliases but must read the seed's
//! commands exactly; a router may rank as it likes but must honour `via` and
//! must not ring a busy or declining callee again; a reply may be in any
//! language but must carry the facts (who, which provider, how long).

use wasmtime::Store;

use super::sandbox::{Failure, Runtime, Sandbox};
use super::types::{
    Account, AddArgs, Answered, Balance, CallbackArgs, Calling, Candidate, Command, EndReason,
    Error, Event, Failover, InsufficientCredit, Leg, LegFailed, LegFailure, LegRole, ListedLeg,
    ParseError, ProviderStats, RouteRequest, Scheme, SessionEnded, SipFailure, WrongState,
};
use super::validate;
use super::world::{Parser, Replies, Router, World};

/// How many times a case is run when it misses the deadline. The deadline
/// is wall-clock time, so a busy host can preempt a good plugin past it;
/// a plugin that is really too slow misses it every time.
const DEADLINE_TRIES: usize = 3;

/// Runs one conformance case.
fn run<W: World, R>(
    runtime: &Runtime,
    pre: &W::Pre,
    call: impl Fn(&W, &mut Store<Sandbox>) -> wasmtime::Result<R>,
) -> Result<R, Failure> {
    let mut tries = 1;
    loop {
        match runtime.run::<W, R>(pre, CANDIDATE, None, &call) {
            Err(Failure::Deadline) if tries < DEADLINE_TRIES => tries += 1,
            result => return result,
        }
    }
}

/// The sender conformance messages come from.
const SENDER: &str = "conformance@switchboard.invalid";
/// The version label used in logs while a candidate is being checked.
const CANDIDATE: &str = "candidate";

fn leg(scheme: Scheme, address: &str) -> Leg {
    Leg {
        scheme,
        address: address.into(),
    }
}

fn phone(number: &str) -> Leg {
    leg(Scheme::Phone, number)
}

fn callback(source: Leg, destination: Leg, via: Option<(&str, &str)>) -> Command {
    Command::Callback(CallbackArgs {
        source,
        destination,
        source_provider: via.map(|v| v.0.into()),
        destination_provider: via.map(|v| v.1.into()),
    })
}

/// The parser set: the seed's example commands with their exact meaning,
/// and messages that must be refused.
fn parser_cases() -> Vec<(&'static str, Option<Command>)> {
    let source = || phone("442071234567");
    let destination = || phone("4915112345678");
    vec![
        (
            "CALLBACK +442071234567 +4915112345678",
            Some(callback(source(), destination(), None)),
        ),
        (
            "CALLBACK +442071234567 +4915112345678 via MKS AVANGARD",
            Some(callback(source(), destination(), Some(("MKS", "AVANGARD")))),
        ),
        (
            "CALLBACK gtalk:ruslan@gmail.com +4915112345678",
            Some(callback(
                leg(Scheme::Gtalk, "ruslan@gmail.com"),
                destination(),
                None,
            )),
        ),
        (
            "CALLBACK msn:ruslan@hotmail.com +4915112345678",
            Some(callback(
                leg(Scheme::Msn, "ruslan@hotmail.com"),
                destination(),
                None,
            )),
        ),
        (
            "CALLBACK yahoo:ruslan +4915112345678",
            Some(callback(leg(Scheme::Yahoo, "ruslan"), destination(), None)),
        ),
        (
            "CALLBACK sip:ruslan@sip.example.com +4915112345678",
            Some(callback(
                leg(Scheme::Sip, "ruslan@sip.example.com"),
                destination(),
                None,
            )),
        ),
        (
            "CALLBACK +442071234567 gtalk:friend@gmail.com",
            Some(callback(
                source(),
                leg(Scheme::Gtalk, "friend@gmail.com"),
                None,
            )),
        ),
        (
            "CALLBACK +442071234567 sip:friend@example.org",
            Some(callback(
                source(),
                leg(Scheme::Sip, "friend@example.org"),
                None,
            )),
        ),
        (
            "CALLBACK phone:442071234567 phone:4915112345678",
            Some(callback(source(), destination(), None)),
        ),
        (
            "  callback   +442071234567\t+4915112345678 ",
            Some(callback(source(), destination(), None)),
        ),
        ("LIST", Some(Command::List)),
        ("list", Some(Command::List)),
        ("HANGUP", Some(Command::Hangup)),
        (
            "ADD +33142685300",
            Some(Command::Add(AddArgs {
                leg: phone("33142685300"),
                provider: None,
            })),
        ),
        (
            "ADD +33142685300 PROXICOM",
            Some(Command::Add(AddArgs {
                leg: phone("33142685300"),
                provider: Some("PROXICOM".into()),
            })),
        ),
        ("DEL +33142685300", Some(Command::Del(phone("33142685300")))),
        ("", None),
        ("DIAL +442071234567", None),
        ("CALLBACK +442071234567", None),
        ("CALLBACK skype:bob +4915112345678", None),
    ]
}

pub(crate) fn parser(runtime: &Runtime, pre: &<Parser as World>::Pre) -> Result<(), String> {
    for (message, expected) in parser_cases() {
        let got = run::<Parser, _>(runtime, pre, |p, store| {
            p.call_parse(store, message, SENDER)
        })
        .map_err(|f| format!("parse({message:?}) {f}"))?;
        validate::parsed(&got, runtime.limits())
            .map_err(|why| format!("parse({message:?}) returned {why}"))?;
        match (&expected, &got) {
            (Some(want), Ok(command)) if want == command => {}
            (None, Err(_)) => {}
            (Some(want), _) => {
                return Err(format!(
                    "parse({message:?}) gave {got:?}, expected Ok({want:?})"
                ));
            }
            (None, Ok(command)) => {
                return Err(format!(
                    "parse({message:?}) gave Ok({command:?}), expected an error"
                ));
            }
        }
    }
    Ok(())
}

/// A provider on offer with these figures (40 attempts, PDD 1.5 s).
pub(crate) fn candidate(
    provider: &str,
    price: i64,
    asr: Option<u32>,
    acd: Option<u32>,
) -> Candidate {
    Candidate {
        provider: provider.into(),
        price_per_minute: price,
        connect_fee: 0,
        increment_secs: 1,
        up: true,
        stats: ProviderStats {
            attempts: 40,
            answered: 20,
            asr_bp: asr,
            acd_secs: acd,
            pdd_ms: Some(1_500),
        },
    }
}

/// A request to route the destination `+4915112345678`.
pub(crate) fn route_request(requested: Option<&str>, candidates: Vec<Candidate>) -> RouteRequest {
    RouteRequest {
        leg: phone("4915112345678"),
        role: LegRole::Destination,
        account: Account {
            id: SENDER.into(),
            balance: 10_000_000,
        },
        requested_provider: requested.map(Into::into),
        candidates,
    }
}

pub(crate) fn router(runtime: &Runtime, pre: &<Router as World>::Pre) -> Result<(), String> {
    let offered = || {
        vec![
            candidate("PROXICOM", 14_000, Some(6_000), Some(90)),
            candidate("PAKLINE", 12_040, Some(5_000), Some(120)),
            candidate("MKS", 9_000, None, None),
        ]
    };
    let route = |request: &RouteRequest| {
        let attempts = run::<Router, _>(runtime, pre, |r, store| r.call_route(store, request))
            .map_err(|f| format!("route {f}"))?;
        validate::attempts(&attempts, request, runtime.limits())
            .map_err(|why| format!("route returned {why}"))?;
        Ok::<_, String>(attempts)
    };

    let open = route_request(None, offered());
    if route(&open)?.is_empty() {
        return Err("route found no provider although three serve the destination".into());
    }
    let via = route_request(Some("PAKLINE"), offered());
    let names: Vec<String> = route(&via)?.into_iter().map(|a| a.provider).collect();
    if names != ["PAKLINE"] {
        return Err(format!(
            "route with 'via PAKLINE' gave {names:?}, expected only PAKLINE"
        ));
    }
    let none = route_request(None, Vec::new());
    if !route(&none)?.is_empty() {
        return Err("route offered attempts for a destination no provider serves".into());
    }

    let failed = super::types::Attempt {
        provider: "PROXICOM".into(),
    };
    for (status, want) in [
        (486, Failover::Stop),
        (600, Failover::Stop),
        (603, Failover::Stop),
        (408, Failover::TryNext),
        (480, Failover::TryNext),
        (503, Failover::TryNext),
    ] {
        let got = run::<Router, _>(runtime, pre, |r, store| {
            r.call_on_failure(store, &open, &failed, status)
        })
        .map_err(|f| format!("on-failure {f}"))?;
        if got != want {
            return Err(format!(
                "on-failure after SIP {status} gave {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}

/// The replies set: one event of each kind, with the facts its text must carry.
fn replies_cases() -> Vec<(Event, Vec<&'static str>)> {
    let source = phone("442071234567");
    let destination = phone("4915112345678");
    vec![
        (
            Event::Calling(Calling {
                role: LegRole::Source,
                leg: source.clone(),
                price_per_minute: 14_000,
                provider: Some("PROXICOM".into()),
            }),
            vec!["442071234567", "PROXICOM"],
        ),
        (
            Event::Calling(Calling {
                role: LegRole::Destination,
                leg: leg(Scheme::Sip, "friend@example.org"),
                price_per_minute: 0,
                provider: None,
            }),
            vec!["friend@example.org"],
        ),
        (
            Event::Answered(Answered {
                role: LegRole::Destination,
                leg: destination.clone(),
                leg_price_per_minute: 12_040,
                session_price_per_minute: 26_040,
            }),
            vec![],
        ),
        (
            Event::Answered(Answered {
                role: LegRole::Additional,
                leg: phone("33142685300"),
                leg_price_per_minute: 14_000,
                session_price_per_minute: 40_040,
            }),
            vec![],
        ),
        (
            Event::LegFailed(LegFailed {
                role: LegRole::Destination,
                leg: destination.clone(),
                reason: LegFailure::Busy,
            }),
            vec!["4915112345678"],
        ),
        (
            Event::LegFailed(LegFailed {
                role: LegRole::Source,
                leg: source.clone(),
                reason: LegFailure::SipError(SipFailure {
                    status: 503,
                    reason: "Service Unavailable".into(),
                }),
            }),
            vec!["442071234567", "503"],
        ),
        (
            Event::LegList(vec![
                ListedLeg {
                    role: LegRole::Source,
                    leg: source.clone(),
                    provider: Some("PROXICOM".into()),
                },
                ListedLeg {
                    role: LegRole::Destination,
                    leg: destination.clone(),
                    provider: Some("PAKLINE".into()),
                },
            ]),
            vec!["442071234567", "PROXICOM", "4915112345678", "PAKLINE"],
        ),
        (Event::LegList(Vec::new()), vec![]),
        (
            Event::SessionEnded(SessionEnded {
                charged_secs: 37,
                cost: 16_058,
                reason: EndReason::EndedByHangup,
            }),
            vec!["37"],
        ),
        (Event::CreditWarning(60), vec!["60"]),
        (
            Event::Balance(Balance {
                amount: 4_500_000,
                currency: "EUR".into(),
            }),
            vec!["EUR"],
        ),
        (Event::Help, vec![]),
        (
            Event::Error(Error::Parse(ParseError {
                reason: "unknown command 'DIAL'".into(),
                syntax: "CALLBACK SourceLeg DestinationLeg".into(),
            })),
            vec!["DIAL", "CALLBACK SourceLeg DestinationLeg"],
        ),
        (
            Event::Error(Error::InsufficientCredit(InsufficientCredit {
                balance: 1_000,
                needed: 26_040,
            })),
            vec![],
        ),
        (
            Event::Error(Error::UnknownProvider("NOPE".into())),
            vec!["NOPE"],
        ),
        (
            Event::Error(Error::WrongState(WrongState {
                command: "ADD".into(),
                state: "no call in progress".into(),
            })),
            vec!["ADD"],
        ),
        (Event::Error(Error::CannotDrop(LegRole::Source)), vec![]),
        (
            Event::Error(Error::LegNotFound(phone("33142685300"))),
            vec!["33142685300"],
        ),
        (
            Event::Error(Error::NumberRefused(phone("112"))),
            vec!["112"],
        ),
        (Event::Error(Error::CallsUnavailable), vec![]),
        (Event::Error(Error::RateLimited), vec![]),
    ]
}

pub(crate) fn replies(runtime: &Runtime, pre: &<Replies as World>::Pre) -> Result<(), String> {
    for (event, facts) in replies_cases() {
        let text = run::<Replies, _>(runtime, pre, |r, store| r.call_render(store, &event))
            .map_err(|f| format!("render({event:?}) {f}"))?;
        validate::rendered(&text, runtime.limits())
            .map_err(|why| format!("render({event:?}) returned {why}"))?;
        if let Some(missing) = facts.iter().find(|fact| !text.contains(*fact)) {
            return Err(format!(
                "render({event:?}) gave {text:?}, which does not mention {missing:?}"
            ));
        }
    }
    Ok(())
}
