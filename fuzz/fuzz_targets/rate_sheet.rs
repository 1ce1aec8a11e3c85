//! Rate sheets and amounts from operators: `read_rates` must report bad
//! rows, never panic, and every amount it accepts must print back to itself.
//!
//! Run: `cargo +nightly fuzz run rate_sheet`

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::billing::Micros;
use switchboard::billing::import::read_rates;

fuzz_target!(|data: &[u8]| {
    let providers = vec!["PROXICOM".to_string(), "PAKLINE".to_string()];
    if let Ok(rows) = read_rates(data, &providers) {
        for row in rows {
            assert!(providers.contains(&row.provider));
            assert!(!row.prefix.is_empty() && row.prefix.bytes().all(|b| b.is_ascii_digit()));
            assert!(row.rate.price_per_minute.0 >= 0 && row.rate.connect_fee.0 >= 0);
            assert!((1..=3600).contains(&row.rate.increment_secs));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = text.parse::<Micros>() {
            assert_eq!(m.to_string().parse::<Micros>(), Ok(m));
        }
    }
});
