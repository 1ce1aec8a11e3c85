//! The default parser plugin: the seed's command grammar, exactly.
//!
//! Built into the host; also a model for operators' parsers. The grammar
//! itself lives in the `command-grammar` crate so other parsers can reuse it.

wit_bindgen::generate!({
    path: "../../wit",
    world: "parser",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

struct DefaultParser;

impl Guest for DefaultParser {
    fn parse(message: String, _sender: String) -> Result<Command, ParseError> {
        command_grammar::parse(&message)
    }
}

export!(DefaultParser);
