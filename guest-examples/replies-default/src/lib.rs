//! The default replies plugin: the seed's texts, typos corrected.

// The generated export shim for `render` takes the flattened event.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "../../wit", world: "replies" });

use switchboard::plugin::types::{
    Answered, Calling, EndReason, Error, LeaveReason, Leg, LegFailed, LegFailure, LegLeft, LegRole,
    ListedLeg, Scheme, SessionEnded,
};

/// Formats millionths of a unit the way the seed does: `14000` is `0.014`.
fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let units = abs / 1_000_000;
    let fraction = abs % 1_000_000;
    if fraction == 0 {
        return format!("{sign}{units}");
    }
    let digits = format!("{fraction:06}");
    format!("{sign}{units}.{}", digits.trim_end_matches('0'))
}

fn leg(leg: &Leg) -> String {
    let scheme = match &leg.scheme {
        Scheme::Phone => "phone",
        Scheme::Sip => "sip",
        Scheme::Gtalk => "gtalk",
        Scheme::Msn => "msn",
        Scheme::Yahoo => "yahoo",
        Scheme::Xmpp => "xmpp",
        Scheme::Other(name) => name.as_str(),
    };
    format!("{scheme}:{}", leg.address)
}

fn role(role: LegRole) -> &'static str {
    match role {
        LegRole::Source => "source",
        LegRole::Destination => "destination",
        LegRole::Additional => "additional",
    }
}

fn capitalised(role: LegRole) -> &'static str {
    match role {
        LegRole::Source => "Source",
        LegRole::Destination => "Destination",
        LegRole::Additional => "Additional",
    }
}

fn calling(c: &Calling) -> String {
    let via = match &c.provider {
        Some(p) => format!(" via {p}"),
        None => String::new(),
    };
    format!(
        "Calling {}: {}, cost = {}{via}",
        role(c.role),
        leg(&c.leg),
        money(c.price_per_minute)
    )
}

fn answered(a: &Answered) -> String {
    match a.role {
        LegRole::Source => format!("Source answered: {}.", leg(&a.leg)),
        LegRole::Destination => format!(
            "Remote answered. Now talking. Cost = {}",
            money(a.session_price_per_minute)
        ),
        LegRole::Additional => format!(
            "Party answered. Now talking. Cost = {}",
            money(a.leg_price_per_minute)
        ),
    }
}

fn failure(reason: &LegFailure, failed: &Leg) -> String {
    match reason {
        LegFailure::Busy => "busy".into(),
        LegFailure::Declined => "the call was declined".into(),
        LegFailure::NoAnswer => "no answer".into(),
        LegFailure::AllProvidersFailed => "all providers failed".into(),
        LegFailure::NoRoute => "no route to this destination".into(),
        LegFailure::NetworkUnreachable => {
            let name = leg(failed);
            let scheme = name.split(':').next().unwrap_or_default();
            format!("the {scheme} network is not reachable from this service")
        }
        LegFailure::NoCommonCodec => "no common audio codec".into(),
        LegFailure::SipError(e) => format!("{} {}", e.status, e.reason),
    }
}

fn leg_failed(f: &LegFailed) -> String {
    format!(
        "Calling {} {} failed: {}.",
        role(f.role),
        leg(&f.leg),
        failure(&f.reason, &f.leg)
    )
}

fn leg_list(legs: &[ListedLeg]) -> String {
    if legs.is_empty() {
        return "No connected legs.".into();
    }
    let mut text = String::from("List of connected legs:");
    for l in legs {
        text.push_str(&format!("\n{}: {}", capitalised(l.role), leg(&l.leg)));
        if let Some(p) = &l.provider {
            text.push_str(&format!(" Via: {p}"));
        }
    }
    text
}

fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::EndedByHangup => "EndedByHangup",
        EndReason::EndedBySource => "EndedBySource",
        EndReason::EndedByDestination => "EndedByDestination",
        EndReason::CreditExhausted => "CreditExhausted",
        EndReason::SourceFailed => "SourceFailed",
        EndReason::DestinationFailed => "DestinationFailed",
        EndReason::Shutdown => "Shutdown",
        EndReason::EndedByOperator => "EndedByOperator",
        EndReason::MediaTimeout => "MediaTimeout",
        EndReason::MaxDuration => "MaxDuration",
        EndReason::SessionExpired => "SessionExpired",
    }
}

fn leg_left(l: &LegLeft) -> String {
    let why = match l.reason {
        LeaveReason::HungUp => "hung up",
        LeaveReason::MediaTimeout => "no audio from it",
        LeaveReason::SessionExpired => "connection lost",
    };
    format!(
        "{} party left: {} ({why})",
        capitalised(l.role),
        leg(&l.leg)
    )
}

fn session_ended(e: &SessionEnded) -> String {
    format!(
        "Call aborted!\nThank you!\nCharged time: {} secs. Reason = {}",
        e.charged_secs,
        end_reason(e.reason)
    )
}

const HELP: &str = "Commands:
CALLBACK SourceLeg DestinationLeg [via provider1 [provider2]] - call SourceLeg (you), then DestinationLeg, and connect them
LIST - list the connected legs
ADD AddLeg [provider] - call one more party into the connected call
DEL AddLeg - drop an additional party
HANGUP - end the call and every leg
BALANCE - show your credit
A leg is +number or phone:number (international format), sip:uri, gtalk:id, msn:id, yahoo:id or xmpp:id.
Example: CALLBACK +442071234567 +4915112345678";

fn error(e: &Error) -> String {
    match e {
        Error::Parse(p) => format!("Error: {}.\nSyntax: {}", p.reason, p.syntax),
        Error::InsufficientCredit(c) if c.needed > 0 => format!(
            "Not enough credit: your balance is {}, this call needs at least {}. Please top up.",
            money(c.balance),
            money(c.needed)
        ),
        Error::InsufficientCredit(c) => format!(
            "Not enough credit: your balance is {}. Please top up.",
            money(c.balance)
        ),
        Error::UnknownProvider(p) => format!("Unknown provider {p} for this destination."),
        Error::WrongState(w) => format!("{} is not possible now: {}.", w.command, w.state),
        Error::CannotDrop(r) => format!(
            "The {} leg cannot be dropped; HANGUP ends the whole call.",
            role(*r)
        ),
        Error::LegNotFound(l) => format!(
            "{} is not one of the additional legs; LIST shows them.",
            leg(l)
        ),
        Error::NumberRefused(l) => format!(
            "Calls to {} are not allowed by this service (emergency and premium-rate numbers are refused).",
            leg(l)
        ),
        Error::CallsUnavailable => {
            "Calls are not available on this host right now; no call was placed.".into()
        }
        Error::RateLimited => "You are sending commands too fast; please wait a moment.".into(),
        Error::Draining => "This service is about to restart; please try again in a minute".into(),
    }
}

/// The text for one event.
fn render(event: &Event) -> String {
    match event {
        Event::Calling(c) => calling(c),
        Event::Answered(a) => answered(a),
        Event::LegFailed(f) => leg_failed(f),
        Event::LegList(legs) => leg_list(legs),
        Event::SessionEnded(e) => session_ended(e),
        Event::CreditWarning(secs) => {
            format!("Warning: your credit runs out in about {secs} secs; the call will then end.")
        }
        Event::DurationWarning(secs) => format!(
            "Warning: the call reaches its maximum length in about {secs} secs; it will then end."
        ),
        Event::LegLeft(l) => leg_left(l),
        Event::Balance(b) => format!("Your balance is {} {}.", money(b.amount), b.currency),
        Event::Help => HELP.into(),
        Event::Error(e) => error(e),
    }
}

struct DefaultReplies;

impl Guest for DefaultReplies {
    fn render(event: Event) -> String {
        render(&event)
    }
}

export!(DefaultReplies);

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard::plugin::types::{Balance, ParseError};

    fn phone(n: &str) -> Leg {
        Leg {
            scheme: Scheme::Phone,
            address: n.into(),
        }
    }

    #[test]
    fn money_is_printed_like_the_seed() {
        assert_eq!(money(14_000), "0.014");
        assert_eq!(money(12_040), "0.01204");
        assert_eq!(money(26_040), "0.02604");
        assert_eq!(money(0), "0");
        assert_eq!(money(5_000_000), "5");
        assert_eq!(money(-1_500_000), "-1.5");
        assert_eq!(money(i64::MIN), "-9223372036854.775808");
    }

    #[test]
    fn seed_transcript() {
        let source = phone("442071234567");
        let destination = phone("4915112345678");
        assert_eq!(
            render(&Event::Calling(Calling {
                role: LegRole::Source,
                leg: source.clone(),
                price_per_minute: 14_000,
                provider: Some("PROXICOM".into()),
            })),
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM"
        );
        assert_eq!(
            render(&Event::Calling(Calling {
                role: LegRole::Destination,
                leg: destination.clone(),
                price_per_minute: 12_040,
                provider: Some("PAKLINE".into()),
            })),
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE"
        );
        assert_eq!(
            render(&Event::Answered(Answered {
                role: LegRole::Destination,
                leg: destination.clone(),
                leg_price_per_minute: 12_040,
                session_price_per_minute: 26_040,
            })),
            "Remote answered. Now talking. Cost = 0.02604"
        );
        assert_eq!(
            render(&Event::SessionEnded(SessionEnded {
                charged_secs: 5,
                cost: 2_170,
                reason: EndReason::EndedByHangup,
            })),
            "Call aborted!\nThank you!\nCharged time: 5 secs. Reason = EndedByHangup"
        );
        assert_eq!(
            render(&Event::Answered(Answered {
                role: LegRole::Additional,
                leg: phone("33142685300"),
                leg_price_per_minute: 14_000,
                session_price_per_minute: 40_040,
            })),
            "Party answered. Now talking. Cost = 0.014"
        );
        assert_eq!(
            render(&Event::LegList(vec![
                ListedLeg {
                    role: LegRole::Source,
                    leg: source,
                    provider: Some("PROXICOM".into())
                },
                ListedLeg {
                    role: LegRole::Destination,
                    leg: destination,
                    provider: Some("PAKLINE".into())
                },
                ListedLeg {
                    role: LegRole::Additional,
                    leg: Leg {
                        scheme: Scheme::Sip,
                        address: "bob@example.com".into()
                    },
                    provider: None
                },
            ])),
            "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE\nAdditional: sip:bob@example.com"
        );
    }

    #[test]
    fn errors_are_explained() {
        let text = render(&Event::Error(Error::Parse(ParseError {
            reason: "unknown command 'DIAL'".into(),
            syntax: "CALLBACK ...".into(),
        })));
        assert_eq!(text, "Error: unknown command 'DIAL'.\nSyntax: CALLBACK ...");
        let text = render(&Event::Error(Error::CannotDrop(LegRole::Source)));
        assert!(text.contains("source leg cannot be dropped"));
        let text = render(&Event::Balance(Balance {
            amount: 4_500_000,
            currency: "EUR".into(),
        }));
        assert_eq!(text, "Your balance is 4.5 EUR.");
    }
}
