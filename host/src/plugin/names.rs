//! The names of the contract's enums as the host writes them in views,
//! logs, CDRs and metrics: one table each, here beside the types, for every
//! module above the plugin runtime to use.

use super::types::{EndReason, LegRole, Scheme};

/// The name of a leg's scheme as written before the colon (`phone`, `sip`).
pub fn scheme_name(scheme: &Scheme) -> &str {
    match scheme {
        Scheme::Phone => "phone",
        Scheme::Sip => "sip",
        Scheme::Gtalk => "gtalk",
        Scheme::Msn => "msn",
        Scheme::Yahoo => "yahoo",
        Scheme::Xmpp => "xmpp",
        Scheme::Other(name) => name,
    }
}

/// A leg role's name (`source`, `destination`, `additional`).
pub fn role_name(role: LegRole) -> &'static str {
    match role {
        LegRole::Source => "source",
        LegRole::Destination => "destination",
        LegRole::Additional => "additional",
    }
}

/// The seed's name of an end reason (`EndedByHangup`), as CDRs and
/// metrics record it.
pub fn end_reason_name(reason: EndReason) -> &'static str {
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
