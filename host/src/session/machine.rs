//! One callback session as a pure state machine: commands, leg outcomes
//! and credit events in, [`Action`]s out. It owns the seed's rules (what is
//! rung when, what a command may do in which state, which leg's end ends the
//! session, what the user is told); how a leg is routed, dialled and billed
//! is the session task's business ([`super::task`]).

use crate::plugin::types::{
    Answered, Calling, Command, EndReason, Error, Event, LeaveReason, Leg, LegFailed, LegFailure,
    LegLeft, LegRole, ListedLeg, WrongState,
};

/// Identifies a leg within its session.
pub type LegKey = u32;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Ringing the source.
    Source,
    /// The source answered and hears ringback; ringing the destination.
    Destination,
    /// Source and destination talk; ADD and DEL are possible.
    Connected,
    /// Over: every leg is being dropped.
    Ended,
}

impl Phase {
    /// The state as a user reads it in a wrong-state reply.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Source => "your phone is still being called, the call is not yet connected",
            Phase::Destination => {
                "the destination is still being called, the call is not yet connected"
            }
            Phase::Connected => "the call is connected",
            Phase::Ended => "the call has ended",
        }
    }
}

/// What happened to a leg, as the session task reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A user command for this session (LIST, ADD, DEL, HANGUP).
    Command(Command),
    /// An attempt to reach the leg started through `provider` at `price`
    /// per minute (one per provider tried).
    Calling {
        /// The leg.
        key: LegKey,
        /// The provider carrying it; none for free legs called directly.
        provider: Option<String>,
        /// Its price per minute in micros; 0 for free legs.
        price: i64,
    },
    /// The leg answered.
    Answered(LegKey),
    /// The leg could not be reached (every attempt is over).
    Failed(LegKey, LegFailure),
    /// An answered leg ended by itself: it hung up, went silent
    /// (`media-timeout`) or its session timer ran out.
    Left(LegKey, LeaveReason),
    /// The leg was refused before it was dialled (no credit, a refused
    /// number, an unknown provider): the owner is told why.
    Refused(LegKey, Error),
    /// The credit clock says this many seconds are left.
    CreditWarning(u32),
    /// The credit clock ran out.
    CreditExhausted,
    /// The call reaches the maximum call length in this many seconds.
    DurationWarning(u32),
    /// The call reached the maximum call length.
    MaxDuration,
    /// The host is shutting down.
    Shutdown,
    /// An operator ended the session.
    EndedByOperator,
}

/// What the session task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Route and dial a new leg (with failover).
    Reach {
        /// The new leg.
        key: LegKey,
        /// Its part.
        role: LegRole,
        /// Where it goes.
        leg: Leg,
        /// The provider the user named, if any.
        provider: Option<String>,
    },
    /// Play ringback to this (answered) leg while another is rung.
    Ringback(LegKey),
    /// Let this leg hear the conference (stops ringback).
    Join(LegKey),
    /// Hang up this leg (CANCEL while ringing, BYE once up) and bill it.
    Drop(LegKey),
    /// Tell the session's owner.
    Tell(Event),
    /// The session is over: every leg has been dropped; settle, release
    /// the reservation and tell the owner what it cost.
    End(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Dialing,
    Up,
    Gone,
}

#[derive(Debug, Clone)]
struct LegState {
    key: LegKey,
    role: LegRole,
    leg: Leg,
    provider: Option<String>,
    price: i64,
    status: Status,
}

/// One callback session's rules.
#[derive(Debug, Clone)]
pub struct Session {
    phase: Phase,
    legs: Vec<LegState>,
    destination: (Leg, Option<String>),
    next_key: LegKey,
}

impl Session {
    /// A session for `CALLBACK source destination [via p1 p2]`: rings the source first.
    pub fn new(
        source: Leg,
        destination: Leg,
        source_provider: Option<String>,
        destination_provider: Option<String>,
    ) -> (Session, Vec<Action>) {
        let mut session = Session {
            phase: Phase::Source,
            legs: Vec::new(),
            destination: (destination, destination_provider),
            next_key: 0,
        };
        let reach = session.open(LegRole::Source, source, source_provider);
        (session, vec![reach])
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The legs that are up, as LIST reports them.
    pub fn connected(&self) -> Vec<ListedLeg> {
        self.legs
            .iter()
            .filter(|l| l.status == Status::Up)
            .map(|l| ListedLeg {
                role: l.role,
                leg: l.leg.clone(),
                provider: l.provider.clone(),
            })
            .collect()
    }

    /// A leg's part in the session.
    pub fn role(&self, key: LegKey) -> Option<LegRole> {
        self.leg(key).map(|l| l.role)
    }

    /// Whether the leg is still dialling or up (not dropped, failed or ended).
    pub fn is_live(&self, key: LegKey) -> bool {
        self.leg(key).is_some_and(|l| l.status != Status::Gone)
    }

    fn leg(&self, key: LegKey) -> Option<&LegState> {
        self.legs.iter().find(|l| l.key == key)
    }

    fn leg_mut(&mut self, key: LegKey) -> Option<&mut LegState> {
        self.legs.iter_mut().find(|l| l.key == key)
    }

    fn open(&mut self, role: LegRole, leg: Leg, provider: Option<String>) -> Action {
        let key = self.next_key;
        self.next_key += 1;
        self.legs.push(LegState {
            key,
            role,
            leg: leg.clone(),
            provider: None,
            price: 0,
            status: Status::Dialing,
        });
        Action::Reach {
            key,
            role,
            leg,
            provider,
        }
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        if self.phase == Phase::Ended {
            // Late news about a leg of a finished session: make sure it is down.
            return match input {
                Input::Calling { key, .. } | Input::Answered(key) => vec![Action::Drop(key)],
                _ => Vec::new(),
            };
        }
        match input {
            Input::Command(command) => self.command(command),
            Input::Calling {
                key,
                provider,
                price,
            } => {
                let Some(leg) = self.leg_mut(key) else {
                    return Vec::new();
                };
                leg.provider = provider.clone();
                leg.price = price;
                vec![Action::Tell(Event::Calling(Calling {
                    role: leg.role,
                    leg: leg.leg.clone(),
                    price_per_minute: price,
                    provider,
                }))]
            }
            Input::Answered(key) => self.answered(key),
            Input::Failed(key, reason) => {
                let Some(leg) = self.leg_mut(key) else {
                    return Vec::new();
                };
                if leg.status == Status::Gone {
                    return Vec::new();
                }
                leg.status = Status::Gone;
                let role = leg.role;
                let mut out = vec![Action::Tell(Event::LegFailed(LegFailed {
                    role,
                    leg: leg.leg.clone(),
                    reason,
                }))];
                match role {
                    LegRole::Source => out.extend(self.end(EndReason::SourceFailed)),
                    LegRole::Destination => out.extend(self.end(EndReason::DestinationFailed)),
                    LegRole::Additional => {}
                }
                out
            }
            Input::Refused(key, error) => {
                let Some(leg) = self.leg_mut(key) else {
                    return Vec::new();
                };
                leg.status = Status::Gone;
                let role = leg.role;
                let mut out = vec![Action::Tell(Event::Error(error))];
                match role {
                    LegRole::Source => out.extend(self.end(EndReason::SourceFailed)),
                    LegRole::Destination => out.extend(self.end(EndReason::DestinationFailed)),
                    LegRole::Additional => {}
                }
                out
            }
            Input::Left(key, reason) => {
                let Some(leg) = self.leg_mut(key) else {
                    return Vec::new();
                };
                if leg.status == Status::Gone {
                    return Vec::new();
                }
                leg.status = Status::Gone;
                let ended = match (leg.role, reason) {
                    (LegRole::Additional, _) => {
                        return vec![Action::Tell(Event::LegLeft(LegLeft {
                            role: leg.role,
                            leg: leg.leg.clone(),
                            reason,
                        }))];
                    }
                    (_, LeaveReason::MediaTimeout) => EndReason::MediaTimeout,
                    (_, LeaveReason::SessionExpired) => EndReason::SessionExpired,
                    (LegRole::Source, LeaveReason::HungUp) => EndReason::EndedBySource,
                    (LegRole::Destination, LeaveReason::HungUp) => EndReason::EndedByDestination,
                };
                self.end(ended)
            }
            Input::CreditWarning(secs) => vec![Action::Tell(Event::CreditWarning(secs))],
            Input::CreditExhausted => self.end(EndReason::CreditExhausted),
            Input::DurationWarning(secs) => vec![Action::Tell(Event::DurationWarning(secs))],
            Input::MaxDuration => self.end(EndReason::MaxDuration),
            Input::Shutdown => self.end(EndReason::Shutdown),
            Input::EndedByOperator => self.end(EndReason::EndedByOperator),
        }
    }

    fn answered(&mut self, key: LegKey) -> Vec<Action> {
        let Some(leg) = self.leg_mut(key) else {
            return Vec::new();
        };
        if leg.status != Status::Dialing {
            return Vec::new();
        }
        leg.status = Status::Up;
        let (role, answered_leg, price) = (leg.role, leg.leg.clone(), leg.price);
        match role {
            LegRole::Source => {
                self.phase = Phase::Destination;
                let (leg, provider) = self.destination.clone();
                vec![
                    Action::Ringback(key),
                    self.open(LegRole::Destination, leg, provider),
                ]
            }
            LegRole::Destination => {
                self.phase = Phase::Connected;
                let mut out: Vec<Action> = self
                    .legs
                    .iter()
                    .filter(|l| l.status == Status::Up)
                    .map(|l| Action::Join(l.key))
                    .collect();
                out.push(Action::Tell(Event::Answered(Answered {
                    role,
                    leg: answered_leg,
                    leg_price_per_minute: price,
                    session_price_per_minute: self.session_price(),
                })));
                out
            }
            LegRole::Additional => vec![
                Action::Join(key),
                Action::Tell(Event::Answered(Answered {
                    role,
                    leg: answered_leg,
                    leg_price_per_minute: price,
                    session_price_per_minute: self.session_price(),
                })),
            ],
        }
    }

    fn session_price(&self) -> i64 {
        self.legs
            .iter()
            .filter(|l| l.status == Status::Up)
            .fold(0i64, |sum, l| sum.saturating_add(l.price))
    }

    fn command(&mut self, command: Command) -> Vec<Action> {
        let wrong = |command: &str, state: &str| {
            vec![Action::Tell(Event::Error(Error::WrongState(WrongState {
                command: command.into(),
                state: state.into(),
            })))]
        };
        match command {
            Command::List => vec![Action::Tell(Event::LegList(self.connected()))],
            Command::Hangup => self.end(EndReason::EndedByHangup),
            Command::Add(args) => {
                if self.phase != Phase::Connected {
                    return wrong("ADD", self.phase.describe());
                }
                vec![self.open(LegRole::Additional, args.leg, args.provider)]
            }
            Command::Del(target) => {
                let Some(found) = self
                    .legs
                    .iter_mut()
                    .find(|l| l.status != Status::Gone && same_leg(&l.leg, &target))
                else {
                    return vec![Action::Tell(Event::Error(Error::LegNotFound(target)))];
                };
                if found.role != LegRole::Additional {
                    return vec![Action::Tell(Event::Error(Error::CannotDrop(found.role)))];
                }
                found.status = Status::Gone;
                let key = found.key;
                vec![
                    Action::Drop(key),
                    Action::Tell(Event::LegList(self.connected())),
                ]
            }
            Command::Callback(_) => wrong(
                "CALLBACK",
                "you already have a call in progress; HANGUP ends it",
            ),
            Command::Help | Command::Balance => Vec::new(),
        }
    }

    fn end(&mut self, reason: EndReason) -> Vec<Action> {
        self.phase = Phase::Ended;
        let mut out = Vec::new();
        for leg in &mut self.legs {
            if leg.status != Status::Gone {
                leg.status = Status::Gone;
                out.push(Action::Drop(leg.key));
            }
        }
        out.push(Action::End(reason));
        out
    }
}

/// Whether `a` and `b` name the same party: same scheme, and the same
/// address (digits for phone numbers, case-insensitive otherwise).
pub fn same_leg(a: &Leg, b: &Leg) -> bool {
    if a.scheme != b.scheme {
        return false;
    }
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    match a.scheme {
        crate::plugin::types::Scheme::Phone => digits(&a.address) == digits(&b.address),
        _ => a.address.eq_ignore_ascii_case(&b.address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{AddArgs, Scheme};

    fn phone(n: &str) -> Leg {
        Leg {
            scheme: Scheme::Phone,
            address: n.into(),
        }
    }

    fn tells(actions: &[Action]) -> Vec<Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Tell(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn connected() -> Session {
        let (mut s, out) = Session::new(phone("442071234567"), phone("4915112345678"), None, None);
        assert!(matches!(
            &out[..],
            [Action::Reach {
                key: 0,
                role: LegRole::Source,
                ..
            }]
        ));
        s.handle(Input::Calling {
            key: 0,
            provider: Some("PROXICOM".into()),
            price: 14_000,
        });
        let out = s.handle(Input::Answered(0));
        assert_eq!(out[0], Action::Ringback(0));
        assert!(matches!(
            &out[1],
            Action::Reach {
                key: 1,
                role: LegRole::Destination,
                ..
            }
        ));
        s.handle(Input::Calling {
            key: 1,
            provider: Some("PAKLINE".into()),
            price: 12_040,
        });
        let out = s.handle(Input::Answered(1));
        assert_eq!(&out[..2], &[Action::Join(0), Action::Join(1)]);
        match &tells(&out)[..] {
            [Event::Answered(a)] => assert_eq!(a.session_price_per_minute, 26_040),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.phase(), Phase::Connected);
        s
    }

    #[test]
    fn callback_list_add_del_hangup() {
        let mut s = connected();
        assert_eq!(s.connected().len(), 2);
        let out = s.handle(Input::Command(Command::Add(AddArgs {
            leg: phone("442071234568"),
            provider: None,
        })));
        assert!(matches!(
            &out[..],
            [Action::Reach {
                key: 2,
                role: LegRole::Additional,
                ..
            }]
        ));
        s.handle(Input::Calling {
            key: 2,
            provider: Some("PROXICOM".into()),
            price: 14_000,
        });
        match &tells(&s.handle(Input::Answered(2)))[..] {
            [Event::Answered(a)] => {
                assert_eq!(
                    (a.leg_price_per_minute, a.session_price_per_minute),
                    (14_000, 40_040)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.connected().len(), 3);
        // The source cannot be dropped; an unknown leg is not found.
        let out = s.handle(Input::Command(Command::Del(phone("+44 20 7123 4567"))));
        assert_eq!(
            tells(&out),
            vec![Event::Error(Error::CannotDrop(LegRole::Source))]
        );
        let out = s.handle(Input::Command(Command::Del(phone("1"))));
        assert_eq!(
            tells(&out),
            vec![Event::Error(Error::LegNotFound(phone("1")))]
        );
        let out = s.handle(Input::Command(Command::Del(phone("442071234568"))));
        assert_eq!(out[0], Action::Drop(2));
        assert_eq!(s.connected().len(), 2);
        let out = s.handle(Input::Command(Command::Hangup));
        assert_eq!(
            out,
            vec![
                Action::Drop(0),
                Action::Drop(1),
                Action::End(EndReason::EndedByHangup)
            ]
        );
        assert_eq!(s.phase(), Phase::Ended);
        // News of a dropped leg after the end changes nothing.
        assert!(s.handle(Input::Left(0, LeaveReason::HungUp)).is_empty());
    }

    #[test]
    fn source_or_destination_ending_ends_the_session_an_additional_does_not() {
        let mut s = connected();
        s.handle(Input::Command(Command::Add(AddArgs {
            leg: phone("33123456789"),
            provider: None,
        })));
        s.handle(Input::Answered(2));
        let out = s.handle(Input::Left(2, LeaveReason::HungUp));
        assert_eq!(
            tells(&out),
            [Event::LegLeft(LegLeft {
                role: LegRole::Additional,
                leg: phone("33123456789"),
                reason: LeaveReason::HungUp,
            })],
            "the user is told who left"
        );
        assert_eq!(s.phase(), Phase::Connected);
        let out = s.handle(Input::Left(1, LeaveReason::HungUp));
        assert_eq!(
            out,
            vec![Action::Drop(0), Action::End(EndReason::EndedByDestination)]
        );
        let mut s = connected();
        let out = s.handle(Input::Left(0, LeaveReason::HungUp));
        assert_eq!(out.last(), Some(&Action::End(EndReason::EndedBySource)));
    }

    #[test]
    fn a_silent_additional_leaves_a_silent_source_or_destination_ends_it() {
        let mut s = connected();
        s.handle(Input::Command(Command::Add(AddArgs {
            leg: phone("33123456789"),
            provider: None,
        })));
        s.handle(Input::Answered(2));
        let out = s.handle(Input::Left(2, LeaveReason::MediaTimeout));
        assert!(matches!(
            &tells(&out)[..],
            [Event::LegLeft(LegLeft {
                reason: LeaveReason::MediaTimeout,
                ..
            })]
        ));
        assert_eq!(s.phase(), Phase::Connected);
        let out = s.handle(Input::Left(0, LeaveReason::MediaTimeout));
        assert_eq!(
            out,
            vec![Action::Drop(1), Action::End(EndReason::MediaTimeout)]
        );
        let mut s = connected();
        let out = s.handle(Input::Left(1, LeaveReason::SessionExpired));
        assert_eq!(out.last(), Some(&Action::End(EndReason::SessionExpired)));
        let mut s = connected();
        assert_eq!(
            tells(&s.handle(Input::DurationWarning(60))),
            [Event::DurationWarning(60)]
        );
        let out = s.handle(Input::MaxDuration);
        assert_eq!(out.last(), Some(&Action::End(EndReason::MaxDuration)));
    }

    #[test]
    fn failures_and_wrong_states() {
        let (mut s, _) = Session::new(phone("1"), phone("2"), None, None);
        let out = s.handle(Input::Command(Command::Add(AddArgs {
            leg: phone("3"),
            provider: None,
        })));
        assert!(
            matches!(&tells(&out)[..], [Event::Error(Error::WrongState(w))] if w.command == "ADD")
        );
        let out = s.handle(Input::Failed(0, LegFailure::Busy));
        assert!(matches!(&tells(&out)[0], Event::LegFailed(f) if f.reason == LegFailure::Busy));
        assert_eq!(out.last(), Some(&Action::End(EndReason::SourceFailed)));

        let (mut s, _) = Session::new(phone("1"), phone("2"), None, None);
        s.handle(Input::Answered(0));
        let out = s.handle(Input::Failed(1, LegFailure::NoAnswer));
        assert_eq!(
            out[1..],
            [Action::Drop(0), Action::End(EndReason::DestinationFailed)]
        );

        // An additional leg failing leaves the call up.
        let mut s = connected();
        s.handle(Input::Command(Command::Add(AddArgs {
            leg: phone("3"),
            provider: None,
        })));
        let out = s.handle(Input::Failed(2, LegFailure::AllProvidersFailed));
        assert_eq!(tells(&out).len(), 1);
        assert_eq!(s.phase(), Phase::Connected);
        // Credit running out ends everything.
        assert_eq!(
            tells(&s.handle(Input::CreditWarning(60))),
            vec![Event::CreditWarning(60)]
        );
        let out = s.handle(Input::CreditExhausted);
        assert_eq!(out.last(), Some(&Action::End(EndReason::CreditExhausted)));
    }

    #[test]
    fn hangup_while_ringing_cancels_and_late_answers_are_dropped() {
        let (mut s, _) = Session::new(phone("1"), phone("2"), None, None);
        let out = s.handle(Input::Command(Command::Hangup));
        assert_eq!(
            out,
            vec![Action::Drop(0), Action::End(EndReason::EndedByHangup)]
        );
        assert_eq!(s.handle(Input::Answered(0)), vec![Action::Drop(0)]);
    }
}
