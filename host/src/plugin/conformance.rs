//! Each slot's conformance set: inputs with the outcomes any version of
//! that slot must produce before it may replace the running one.
//!
//! The sets pin down what the seed requires and leave room for what
//! operators change: a parser may add aliases but must read the seed's
//! commands exactly; a router may rank as it likes but must honour `via` and
//! must not ring a busy or declining callee again; a reply may be in any
//! language but must carry the facts (who, which provider, how long).
//!
//! The senders, numbers, addresses and provider names are drawn afresh on
//! every run ([`Draw`]), within the shapes the contract allows, so a plugin
//! cannot recognise the check and behave only while it is watched.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmtime::Store;

use super::sandbox::{Failure, Runtime, Sandbox};
use super::types::{
    Account, AddArgs, Answered, Balance, CallbackArgs, Calling, Candidate, Command, EndReason,
    Error, Event, Failover, InsufficientCredit, LeaveReason, Leg, LegFailed, LegFailure, LegLeft,
    LegRole, ListedLeg, ParseError, ProviderStats, RouteRequest, Scheme, SessionEnded, SipFailure,
    WrongState,
};
use super::validate;
use super::world::{Parser, Replies, Router, World};

/// How many times a case is run when it is still running at the wall-clock
/// backstop: a stalled host can hold a good plugin past it; a plugin that
/// really stalls does every time. Work is bounded by fuel, which a busy
/// host does not change.
const DEADLINE_TRIES: usize = 3;

/// The version label used in logs while a candidate is being checked.
const CANDIDATE: &str = "candidate";

/// The values one conformance run uses, drawn from a seeded generator.
pub(crate) struct Draw {
    rng: StdRng,
    /// The run's sender / account.
    sender: String,
}

impl Draw {
    /// Values drawn from a fresh random seed.
    pub(crate) fn fresh() -> Draw {
        Draw::seeded(rand::rng().random())
    }

    /// Values drawn from `seed` (for tests that replay a run).
    pub(crate) fn seeded(seed: u64) -> Draw {
        let mut rng = StdRng::seed_from_u64(seed);
        let sender = format!("{}@{}", word(&mut rng, 3, 10), domain(&mut rng));
        Draw { rng, sender }
    }

    /// A phone number in the contract's form: a country code first (no
    /// leading 0), 9 to 13 digits in all.
    fn number(&mut self) -> String {
        let len = self.rng.random_range(9..=13);
        let mut n = String::with_capacity(len);
        n.push(char::from(b'1' + self.rng.random_range(0..9u8)));
        while n.len() < len {
            n.push(char::from(b'0' + self.rng.random_range(0..10u8)));
        }
        n
    }

    /// A provider name: 3 to 9 upper-case letters, never a command word.
    fn provider(&mut self) -> String {
        loop {
            let name = word(&mut self.rng, 3, 9).to_ascii_uppercase();
            if !["VIA", "ADD", "DEL", "LIST", "HANGUP", "HELP", "BALANCE"].contains(&name.as_str())
            {
                return name;
            }
        }
    }

    /// `count` distinct provider names.
    fn providers(&mut self, count: usize) -> Vec<String> {
        let mut names: Vec<String> = Vec::with_capacity(count);
        while names.len() < count {
            let name = self.provider();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// An IM or SIP address `user@domain`.
    fn address(&mut self) -> String {
        format!("{}@{}", word(&mut self.rng, 2, 10), domain(&mut self.rng))
    }

    fn between(&mut self, low: u32, high: u32) -> u32 {
        self.rng.random_range(low..=high)
    }
}

/// Lower-case letters, `min` to `max` of them.
fn word(rng: &mut StdRng, min: usize, max: usize) -> String {
    let len = rng.random_range(min..=max);
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

fn domain(rng: &mut StdRng) -> String {
    let tld = ["com", "org", "net", "de", "co.uk", "example"][rng.random_range(0..6)];
    format!("{}.{tld}", word(rng, 2, 12))
}

/// Runs one conformance case; returns its result and the fuel it used.
fn run<W: World, R>(
    runtime: &Runtime,
    pre: &W::Pre,
    call: impl Fn(&W, &mut Store<Sandbox>) -> wasmtime::Result<R>,
) -> Result<(R, u64), Failure> {
    let mut tries = 1;
    loop {
        match runtime.run::<W, R>(pre, CANDIDATE, None, &call, |_| Ok(())) {
            Err(Failure::Deadline) if tries < DEADLINE_TRIES => tries += 1,
            result => return result,
        }
    }
}

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
fn parser_cases(draw: &mut Draw) -> Vec<(String, Option<Command>)> {
    let (src, dst, added) = (draw.number(), draw.number(), draw.number());
    let (gtalk, msn, sip, friend) = (
        draw.address(),
        draw.address(),
        draw.address(),
        draw.address(),
    );
    let yahoo = word(&mut draw.rng, 3, 12);
    let via = draw.providers(3);
    let (p1, p2, p3) = (&via[0], &via[1], &via[2]);
    let source = || phone(&src);
    let destination = || phone(&dst);
    vec![
        (
            format!("CALLBACK +{src} +{dst}"),
            Some(callback(source(), destination(), None)),
        ),
        (
            format!("CALLBACK +{src} +{dst} via {p1} {p2}"),
            Some(callback(source(), destination(), Some((p1, p2)))),
        ),
        (
            format!("CALLBACK gtalk:{gtalk} +{dst}"),
            Some(callback(leg(Scheme::Gtalk, &gtalk), destination(), None)),
        ),
        (
            format!("CALLBACK msn:{msn} +{dst}"),
            Some(callback(leg(Scheme::Msn, &msn), destination(), None)),
        ),
        (
            format!("CALLBACK yahoo:{yahoo} +{dst}"),
            Some(callback(leg(Scheme::Yahoo, &yahoo), destination(), None)),
        ),
        (
            format!("CALLBACK sip:{sip} +{dst}"),
            Some(callback(leg(Scheme::Sip, &sip), destination(), None)),
        ),
        (
            format!("CALLBACK +{src} gtalk:{friend}"),
            Some(callback(source(), leg(Scheme::Gtalk, &friend), None)),
        ),
        (
            format!("CALLBACK +{src} sip:{friend}"),
            Some(callback(source(), leg(Scheme::Sip, &friend), None)),
        ),
        (
            format!("CALLBACK phone:{src} phone:{dst}"),
            Some(callback(source(), destination(), None)),
        ),
        (
            format!("  callback   +{src}\t+{dst} "),
            Some(callback(source(), destination(), None)),
        ),
        ("LIST".into(), Some(Command::List)),
        ("list".into(), Some(Command::List)),
        ("HANGUP".into(), Some(Command::Hangup)),
        (
            format!("ADD +{added}"),
            Some(Command::Add(AddArgs {
                leg: phone(&added),
                provider: None,
            })),
        ),
        (
            format!("ADD +{added} {p3}"),
            Some(Command::Add(AddArgs {
                leg: phone(&added),
                provider: Some(p3.clone()),
            })),
        ),
        (format!("DEL +{added}"), Some(Command::Del(phone(&added)))),
        (String::new(), None),
        (format!("DIAL +{src}"), None),
        (format!("CALLBACK +{src}"), None),
        (format!("CALLBACK skype:{yahoo} +{dst}"), None),
    ]
}

/// Runs the parser set; returns the most fuel one case used.
pub(crate) fn parser(
    runtime: &Runtime,
    pre: &<Parser as World>::Pre,
    draw: &mut Draw,
) -> Result<u64, String> {
    let sender = draw.sender.clone();
    let mut most = 0;
    for (message, expected) in parser_cases(draw) {
        let (got, fuel) = run::<Parser, _>(runtime, pre, |p, store| {
            p.call_parse(store, &message, &sender)
        })
        .map_err(|f| format!("parse({message:?}) {f}"))?;
        most = most.max(fuel);
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
    Ok(most)
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
#[cfg(test)]
pub(crate) fn route_request(requested: Option<&str>, candidates: Vec<Candidate>) -> RouteRequest {
    request_for(
        "conformance@switchboard.invalid",
        "4915112345678",
        requested,
        candidates,
    )
}

/// A request from `account` to route the destination `number`.
fn request_for(
    account: &str,
    number: &str,
    requested: Option<&str>,
    candidates: Vec<Candidate>,
) -> RouteRequest {
    RouteRequest {
        leg: phone(number),
        role: LegRole::Destination,
        account: Account {
            id: account.into(),
            balance: 10_000_000,
        },
        requested_provider: requested.map(Into::into),
        candidates,
    }
}

/// Runs the router set; returns the most fuel one case used.
pub(crate) fn router(
    runtime: &Runtime,
    pre: &<Router as World>::Pre,
    draw: &mut Draw,
) -> Result<u64, String> {
    let names = draw.providers(3);
    let prices: Vec<i64> = (0..3)
        .map(|_| i64::from(draw.between(1_000, 90_000)))
        .collect();
    let asr: Vec<u32> = (0..2).map(|_| draw.between(1_000, 9_000)).collect();
    let acd: Vec<u32> = (0..2).map(|_| draw.between(20, 300)).collect();
    let offered = || {
        vec![
            candidate(&names[0], prices[0], Some(asr[0]), Some(acd[0])),
            candidate(&names[1], prices[1], Some(asr[1]), Some(acd[1])),
            candidate(&names[2], prices[2], None, None),
        ]
    };
    let (sender, number) = (draw.sender.clone(), draw.number());
    let request =
        |requested: Option<&str>, candidates| request_for(&sender, &number, requested, candidates);
    let mut most = 0;
    let mut route = |request: &RouteRequest| {
        let (attempts, fuel) =
            run::<Router, _>(runtime, pre, |r, store| r.call_route(store, request))
                .map_err(|f| format!("route {f}"))?;
        most = most.max(fuel);
        validate::attempts(&attempts, request, runtime.limits())
            .map_err(|why| format!("route returned {why}"))?;
        Ok::<_, String>(attempts)
    };

    let open = request(None, offered());
    if route(&open)?.is_empty() {
        return Err("route found no provider although three serve the destination".into());
    }
    let chosen = &names[draw.between(0, 2) as usize];
    let via = request(Some(chosen), offered());
    let got: Vec<String> = route(&via)?.into_iter().map(|a| a.provider).collect();
    if got != [chosen.clone()] {
        return Err(format!(
            "route with 'via {chosen}' gave {got:?}, expected only {chosen}"
        ));
    }
    let none = request(None, Vec::new());
    if !route(&none)?.is_empty() {
        return Err("route offered attempts for a destination no provider serves".into());
    }

    let failed = super::types::Attempt {
        provider: names[0].clone(),
    };
    for (status, want) in [
        (486, Failover::Stop),
        (600, Failover::Stop),
        (603, Failover::Stop),
        (408, Failover::TryNext),
        (480, Failover::TryNext),
        (503, Failover::TryNext),
    ] {
        let (got, fuel) = run::<Router, _>(runtime, pre, |r, store| {
            r.call_on_failure(store, &open, &failed, status)
        })
        .map_err(|f| format!("on-failure {f}"))?;
        most = most.max(fuel);
        if got != want {
            return Err(format!(
                "on-failure after SIP {status} gave {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(most)
}

/// The replies set: one event of each kind, with the facts its text must carry.
fn replies_cases(draw: &mut Draw) -> Vec<(Event, Vec<String>)> {
    let (src, dst, added, refused) = (draw.number(), draw.number(), draw.number(), draw.number());
    let names = draw.providers(3);
    let (p1, p2, unknown) = (names[0].clone(), names[1].clone(), names[2].clone());
    let friend = draw.address();
    let (secs, warning, status) = (
        draw.between(1, 7_200),
        draw.between(10, 600),
        [500, 502, 503, 504, 403, 404][draw.between(0, 5) as usize],
    );
    let word = word(&mut draw.rng, 4, 8).to_ascii_uppercase();
    let currency = ["EUR", "USD", "GBP", "CHF"][draw.between(0, 3) as usize].to_string();
    let price = |d: &mut Draw| i64::from(d.between(1_000, 90_000));
    let (source, destination) = (phone(&src), phone(&dst));
    let syntax = format!("CALLBACK {} SourceLeg DestinationLeg", word.to_lowercase());
    vec![
        (
            Event::Calling(Calling {
                role: LegRole::Source,
                leg: source.clone(),
                price_per_minute: price(draw),
                provider: Some(p1.clone()),
            }),
            vec![src.clone(), p1.clone()],
        ),
        (
            Event::Calling(Calling {
                role: LegRole::Destination,
                leg: leg(Scheme::Sip, &friend),
                price_per_minute: 0,
                provider: None,
            }),
            vec![friend.clone()],
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
                leg: phone(&added),
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
            vec![dst.clone()],
        ),
        (
            Event::LegFailed(LegFailed {
                role: LegRole::Source,
                leg: source.clone(),
                reason: LegFailure::SipError(SipFailure {
                    status,
                    reason: "Service Unavailable".into(),
                }),
            }),
            vec![src.clone(), status.to_string()],
        ),
        (
            Event::LegList(vec![
                ListedLeg {
                    role: LegRole::Source,
                    leg: source.clone(),
                    provider: Some(p1.clone()),
                },
                ListedLeg {
                    role: LegRole::Destination,
                    leg: destination.clone(),
                    provider: Some(p2.clone()),
                },
            ]),
            vec![src.clone(), p1.clone(), dst.clone(), p2.clone()],
        ),
        (Event::LegList(Vec::new()), vec![]),
        (
            Event::SessionEnded(SessionEnded {
                charged_secs: secs,
                cost: 16_058,
                reason: EndReason::EndedByHangup,
            }),
            vec![secs.to_string()],
        ),
        (Event::CreditWarning(warning), vec![warning.to_string()]),
        (Event::DurationWarning(warning), vec![warning.to_string()]),
        (
            Event::LegLeft(LegLeft {
                role: LegRole::Additional,
                leg: phone(&added),
                reason: LeaveReason::HungUp,
            }),
            vec![added.clone()],
        ),
        (
            Event::SessionEnded(SessionEnded {
                charged_secs: secs,
                cost: 16_058,
                reason: EndReason::MediaTimeout,
            }),
            vec![secs.to_string()],
        ),
        (
            Event::Balance(Balance {
                amount: 4_500_000,
                currency: currency.clone(),
            }),
            vec![currency],
        ),
        (Event::Help, vec![]),
        (
            Event::Error(Error::Parse(ParseError {
                reason: format!("unknown command '{word}'"),
                syntax: syntax.clone(),
            })),
            vec![word.clone(), syntax],
        ),
        (
            Event::Error(Error::InsufficientCredit(InsufficientCredit {
                balance: 1_000,
                needed: 26_040,
            })),
            vec![],
        ),
        (
            Event::Error(Error::UnknownProvider(unknown.clone())),
            vec![unknown],
        ),
        (
            Event::Error(Error::WrongState(WrongState {
                command: "ADD".into(),
                state: "no call in progress".into(),
            })),
            vec!["ADD".into()],
        ),
        (Event::Error(Error::CannotDrop(LegRole::Source)), vec![]),
        (
            Event::Error(Error::LegNotFound(phone(&added))),
            vec![added.clone()],
        ),
        (
            Event::Error(Error::NumberRefused(phone(&refused))),
            vec![refused],
        ),
        (Event::Error(Error::CallsUnavailable), vec![]),
        (Event::Error(Error::RateLimited), vec![]),
        (Event::Error(Error::Draining), vec![]),
    ]
}

/// Runs the replies set; returns the most fuel one case used.
pub(crate) fn replies(
    runtime: &Runtime,
    pre: &<Replies as World>::Pre,
    draw: &mut Draw,
) -> Result<u64, String> {
    let mut most = 0;
    for (event, facts) in replies_cases(draw) {
        let (text, fuel) = run::<Replies, _>(runtime, pre, |r, store| r.call_render(store, &event))
            .map_err(|f| format!("render({event:?}) {f}"))?;
        most = most.max(fuel);
        validate::rendered(&text, runtime.limits())
            .map_err(|why| format!("render({event:?}) returned {why}"))?;
        if let Some(missing) = facts.iter().find(|fact| !text.contains(fact.as_str())) {
            return Err(format!(
                "render({event:?}) gave {text:?}, which does not mention {missing:?}"
            ));
        }
    }
    Ok(most)
}
