//! Fuzzes the strict SIP URI type every call is addressed to: parsing never
//! panics; a URI it accepts prints without whitespace, controls, `<>"`,
//! `?` or anything outside ASCII, with at most the `transport` and `user`
//! parameters, and re-parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::TargetUri;

fuzz_target!(|text: &str| {
    let Ok(uri) = TargetUri::parse(text) else {
        return;
    };
    let printed = uri.to_string();
    assert!(printed.is_ascii(), "{printed:?}");
    assert!(
        !printed
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || "<>\"?".contains(c)),
        "{printed:?}"
    );
    for param in printed.split(';').skip(1) {
        assert!(
            param.starts_with("transport=") || param == "user=phone",
            "{printed:?}"
        );
    }
    assert_eq!(TargetUri::parse(&printed).as_ref(), Ok(&uri), "{printed:?}");
    let _ = uri.user_digits();
});
