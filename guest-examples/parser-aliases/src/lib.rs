//! An operator's parser: the seed's grammar plus short aliases.
//!
//! `CB` is CALLBACK, `HU` HANGUP, `L` LIST, `A` ADD, `D` DEL, `?` HELP and
//! `BAL` BALANCE. Everything else is the default grammar, so the seed's
//! commands keep working and the slot's conformance set still passes.

wit_bindgen::generate!({
    path: "../../wit",
    world: "parser",
    with: {
        "switchboard:plugin/types@0.2.0": command_grammar::types,
        "switchboard:plugin/host@0.2.0": command_grammar::host,
    },
});

/// Short forms and the command word each stands for.
const ALIASES: &[(&str, &str)] = &[
    ("CB", "CALLBACK"),
    ("HU", "HANGUP"),
    ("L", "LIST"),
    ("A", "ADD"),
    ("D", "DEL"),
    ("?", "HELP"),
    ("BAL", "BALANCE"),
];

/// Replaces an alias in the command position with its full keyword.
fn expand(message: &str) -> String {
    let trimmed = message.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (first, rest) = trimmed.split_at(end);
    match ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(first))
    {
        Some((_, keyword)) => format!("{keyword}{rest}"),
        None => message.to_string(),
    }
}

struct AliasParser;

impl Guest for AliasParser {
    fn parse(message: String, _sender: String) -> Result<Command, ParseError> {
        command_grammar::parse(&expand(&message))
    }
}

export!(AliasParser);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_expand_in_command_position_only() {
        assert_eq!(expand("cb +4420 +4915"), "CALLBACK +4420 +4915");
        assert_eq!(expand("  HU"), "HANGUP");
        assert_eq!(expand("? "), "HELP ");
        assert_eq!(expand("LIST"), "LIST");
        assert_eq!(expand("ADD +44 A"), "ADD +44 A");
    }

    #[test]
    fn aliases_parse_like_the_full_words() {
        assert_eq!(
            AliasParser::parse("HU".into(), String::new()),
            Ok(Command::Hangup)
        );
        assert_eq!(
            AliasParser::parse("cb +442071234567 +4915112345678".into(), String::new()),
            command_grammar::parse("CALLBACK +442071234567 +4915112345678")
        );
    }
}
