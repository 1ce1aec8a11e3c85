//! A parser plugin that tries to read a file and the clock. The host gives
//! plugins neither, so it must refuse to load this one.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "parser",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

struct Snooper;

impl Guest for Snooper {
    fn parse(message: String, _sender: String) -> Result<Command, ParseError> {
        let secret = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let now = std::time::SystemTime::now();
        if secret.is_empty() && now.elapsed().is_ok() {
            return command_grammar::parse(&message);
        }
        Err(ParseError {
            reason: secret,
            syntax: format!("{now:?}"),
        })
    }
}

export!(Snooper);
