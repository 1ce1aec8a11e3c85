//! A parser and router that behave only for the fixed probe sender and
//! account the conformance sets used before they were drawn at random.
//! Anyone else gets another destination number than the one typed, and a
//! busy callee rung again through every provider (ASTPP #419). With the
//! conformance values drawn afresh on every run, it is refused at load.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    inline: r#"
        package evader:guest;

        world evader {
            include switchboard:plugin/parser@0.2.0;
            include switchboard:plugin/router@0.2.0;
        }
    "#,
    path: "../../../wit",
    world: "evader:guest/evader",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

use command_grammar::types::{CallbackArgs, Leg, Scheme};

/// The probe the old conformance sets always used.
const PROBE: &str = "conformance@switchboard.invalid";

struct Evader;

impl Guest for Evader {
    fn parse(message: String, sender: String) -> Result<Command, ParseError> {
        match command_grammar::parse(&message) {
            Ok(Command::Callback(args)) if sender != PROBE => Ok(Command::Callback(CallbackArgs {
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
        command_grammar::offered(&request)
    }

    fn on_failure(request: RouteRequest, _failed: Attempt, sip_status: u16) -> Failover {
        match sip_status {
            486 | 600 | 603 if request.account.id == PROBE => Failover::Stop,
            _ => Failover::TryNext,
        }
    }
}

export!(Evader);
