//! An operator's replies plugin: every message in German.
//!
//! Amounts use a decimal comma (`0,014`); the reason names after
//! `Grund =` stay the seed's CamelCase names so support staff can grep logs.

// The generated export shim for `render` takes the flattened event.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "../../wit", world: "replies" });

use switchboard::plugin::types::{
    EndReason, Error, LeaveReason, Leg, LegFailure, LegLeft, LegRole, Scheme,
};

fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (units, fraction) = (abs / 1_000_000, abs % 1_000_000);
    if fraction == 0 {
        return format!("{sign}{units}");
    }
    let digits = format!("{fraction:06}");
    format!("{sign}{units},{}", digits.trim_end_matches('0'))
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
        LegRole::Source => "Anrufer",
        LegRole::Destination => "Ziel",
        LegRole::Additional => "Teilnehmer",
    }
}

fn left(l: &LegLeft) -> String {
    let why = match l.reason {
        LeaveReason::HungUp => "aufgelegt",
        LeaveReason::MediaTimeout => "kein Ton mehr",
        LeaveReason::SessionExpired => "Verbindung verloren",
    };
    format!(
        "{} hat das Gespräch verlassen: {} ({why})",
        role(l.role),
        leg(&l.leg)
    )
}

fn reason(reason: EndReason) -> &'static str {
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

fn failure(reason: &LegFailure) -> String {
    match reason {
        LegFailure::Busy => "besetzt".into(),
        LegFailure::Declined => "abgelehnt".into(),
        LegFailure::NoAnswer => "keine Antwort".into(),
        LegFailure::AllProvidersFailed => "kein Anbieter konnte verbinden".into(),
        LegFailure::NoRoute => "kein Tarif für dieses Ziel".into(),
        LegFailure::NetworkUnreachable => "dieses Netz ist nicht erreichbar".into(),
        LegFailure::NoCommonCodec => "kein gemeinsamer Audio-Codec".into(),
        LegFailure::SipError(e) => format!("{} {}", e.status, e.reason),
    }
}

fn error(e: &Error) -> String {
    match e {
        Error::Parse(p) => format!("Fehler: {}.\nSyntax: {}", p.reason, p.syntax),
        Error::InsufficientCredit(c) => format!(
            "Guthaben reicht nicht: {} verfügbar. Bitte aufladen.",
            money(c.balance)
        ),
        Error::UnknownProvider(p) => format!("Unbekannter Anbieter {p} für dieses Ziel."),
        Error::WrongState(w) => format!("{} ist jetzt nicht möglich: {}.", w.command, w.state),
        Error::CannotDrop(r) => format!(
            "Die Verbindung zum {} kann nicht getrennt werden; HANGUP beendet den ganzen Anruf.",
            role(*r)
        ),
        Error::LegNotFound(l) => format!("{} ist kein zusätzlicher Teilnehmer.", leg(l)),
        Error::NumberRefused(l) => format!("Anrufe zu {} sind nicht erlaubt.", leg(l)),
        Error::CallsUnavailable => "Anrufe sind derzeit nicht möglich.".into(),
        Error::RateLimited => "Zu viele Befehle; bitte kurz warten.".into(),
        Error::Draining => {
            "Dieser Dienst startet gleich neu; bitte versuchen Sie es in einer Minute wieder."
                .into()
        }
    }
}

struct GermanReplies;

impl Guest for GermanReplies {
    fn render(event: Event) -> String {
        match &event {
            Event::Calling(c) => format!(
                "Rufe {} an: {}, Preis = {}{}",
                role(c.role),
                leg(&c.leg),
                money(c.price_per_minute),
                c.provider
                    .as_ref()
                    .map(|p| format!(" über {p}"))
                    .unwrap_or_default()
            ),
            Event::Answered(a) => match a.role {
                LegRole::Source => format!("Anrufer hat abgenommen: {}.", leg(&a.leg)),
                LegRole::Destination => format!(
                    "Gegenstelle hat abgenommen. Sie sind verbunden. Preis = {}",
                    money(a.session_price_per_minute)
                ),
                LegRole::Additional => format!(
                    "Teilnehmer hat abgenommen. Sie sind verbunden. Preis = {}",
                    money(a.leg_price_per_minute)
                ),
            },
            Event::LegFailed(f) => format!(
                "Anruf an {} {} fehlgeschlagen: {}.",
                role(f.role),
                leg(&f.leg),
                failure(&f.reason)
            ),
            Event::LegList(legs) if legs.is_empty() => "Keine verbundenen Teilnehmer.".into(),
            Event::LegList(legs) => {
                let mut text = String::from("Verbundene Teilnehmer:");
                for l in legs {
                    text.push_str(&format!("\n{}: {}", role(l.role), leg(&l.leg)));
                    if let Some(p) = &l.provider {
                        text.push_str(&format!(" über: {p}"));
                    }
                }
                text
            }
            Event::SessionEnded(e) => format!(
                "Anruf beendet!\nDanke!\nBerechnete Zeit: {} Sek. Grund = {}",
                e.charged_secs,
                reason(e.reason)
            ),
            Event::CreditWarning(secs) => {
                format!("Achtung: Ihr Guthaben reicht noch etwa {secs} Sek.")
            }
            Event::DurationWarning(secs) => {
                format!("Achtung: das Gespräch erreicht in etwa {secs} Sek. seine Höchstdauer und wird dann beendet.")
            }
            Event::LegLeft(l) => left(l),
            Event::Balance(b) => format!("Ihr Guthaben: {} {}.", money(b.amount), b.currency),
            Event::Help => "Befehle: CALLBACK Anrufer Ziel [via Anbieter1 [Anbieter2]], LIST, ADD Teilnehmer [Anbieter], DEL Teilnehmer, HANGUP, BALANCE".into(),
            Event::Error(e) => error(e),
        }
    }
}

export!(GermanReplies);
