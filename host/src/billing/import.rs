//! Reading rate sheets (CSV) for import. Every row is checked before
//! anything is written; a sheet with one bad row is refused whole, with each
//! bad row reported by its line number.
//!
//! ```csv
//! provider,prefix,price_per_minute,increment_secs,connect_fee
//! PROXICOM,44,0.02,1,0
//! PROXICOM,4420,0.014,,
//! PAKLINE,92,0.01204
//! ```
//!
//! `increment_secs` (default 1) and `connect_fee` (default 0) may be left
//! empty or out. Prices are decimals in the account currency, read exactly.

use std::collections::HashSet;
use std::io::Read;

use super::money::Micros;
use super::rating::Rate;
use super::store::RateRow;

/// One bad row of a rate sheet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// Line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

const COLUMNS: [&str; 5] = [
    "provider",
    "prefix",
    "price_per_minute",
    "increment_secs",
    "connect_fee",
];

/// Reads and checks a rate sheet against the providers that exist.
pub fn read_rates(input: impl Read, providers: &[String]) -> Result<Vec<RateRow>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.to_ascii_lowercase()).collect(),
        Err(e) => {
            return Err(vec![RowError {
                line: 1,
                reason: format!("unreadable header: {e}"),
            }]);
        }
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    for required in &COLUMNS[..3] {
        if column(required).is_none() {
            return Err(vec![RowError {
                line: 1,
                reason: format!(
                    "the header must name the columns {} (optional: {}); it has {}",
                    COLUMNS[..3].join(","),
                    COLUMNS[3..].join(","),
                    header.join(",")
                ),
            }]);
        }
    }
    if let Some(unknown) = header.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        return Err(vec![RowError {
            line: 1,
            reason: format!("unknown column {unknown:?}"),
        }]);
    }
    let (p, x, price) = (
        column("provider"),
        column("prefix"),
        column("price_per_minute"),
    );
    let (inc, fee) = (column("increment_secs"), column("connect_fee"));
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(RowError {
                    line,
                    reason: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        match read_row(
            cell(p),
            cell(x),
            cell(price),
            cell(inc),
            cell(fee),
            providers,
        ) {
            Ok(row) => {
                if !seen.insert((row.provider.clone(), row.prefix.clone())) {
                    errors.push(RowError {
                        line,
                        reason: format!("{} {} appears twice", row.provider, row.prefix),
                    });
                    continue;
                }
                rows.push(row);
            }
            Err(reason) => errors.push(RowError { line, reason }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(rows)
}

fn read_row(
    provider: &str,
    prefix: &str,
    price: &str,
    increment: &str,
    fee: &str,
    providers: &[String],
) -> Result<RateRow, String> {
    if !providers.iter().any(|p| p == provider) {
        return Err(format!(
            "unknown provider {provider:?} (providers come from [[sip.providers]] in the configuration)"
        ));
    }
    let digits = prefix.strip_prefix('+').unwrap_or(prefix);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("prefix {prefix:?} is not 1 to 15 digits"));
    }
    let money = |what: &str, text: &str| -> Result<Micros, String> {
        let m: Micros = text.parse().map_err(|e| format!("{what}: {e}"))?;
        if m.0 < 0 {
            return Err(format!("{what} {text} is negative"));
        }
        Ok(m)
    };
    let price_per_minute = money("price_per_minute", price)?;
    let increment_secs = match increment {
        "" => 1,
        text => match text.parse::<u32>() {
            Ok(n @ 1..=3600) => n,
            _ => return Err(format!("increment_secs {text:?} is not 1 to 3600")),
        },
    };
    let connect_fee = match fee {
        "" => Micros::ZERO,
        text => money("connect_fee", text)?,
    };
    Ok(RateRow {
        provider: provider.to_string(),
        prefix: digits.to_string(),
        rate: Rate {
            price_per_minute,
            increment_secs,
            connect_fee,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Vec<String> {
        vec!["PROXICOM".into(), "PAKLINE".into()]
    }

    #[test]
    fn good_sheet() {
        let csv = "provider,prefix,price_per_minute,increment_secs,connect_fee\n\
                   PROXICOM,44,0.02,1,0\nPROXICOM,+4420,0.014,,\n\nPAKLINE,92,0.01204\n\
                   PAKLINE,1,0.05,60,0.01\n";
        let rows = read_rates(csv.as_bytes(), &providers()).expect("valid");
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].prefix, "4420");
        assert_eq!(rows[1].rate, Rate::per_minute(Micros(14_000)));
        assert_eq!(rows[3].rate.increment_secs, 60);
        assert_eq!(rows[3].rate.connect_fee, Micros(10_000));
    }

    #[test]
    fn every_bad_row_is_reported_by_line() {
        let csv = "provider,prefix,price_per_minute\n\
                   PROXICOM,44,0.02\n\
                   NOPE,44,0.02\n\
                   PROXICOM,4x,0.02\n\
                   PROXICOM,45,abc\n\
                   PROXICOM,46,-1\n\
                   PROXICOM,44,0.03\n\
                   PROXICOM,47,0.0000001\n";
        let errors = read_rates(csv.as_bytes(), &providers()).expect_err("bad rows");
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8], "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with("line 3: unknown provider \"NOPE\"")
        );
        assert!(errors[4].reason.contains("appears twice"));
        assert!(errors[5].reason.contains("more than 6 decimals"));
    }

    #[test]
    fn header_must_name_the_columns() {
        let e = read_rates("a,b,c\nPROXICOM,44,0.1\n".as_bytes(), &providers()).expect_err("bad");
        assert_eq!(e[0].line, 1);
        assert!(e[0].reason.contains("must name the columns"));
        let e = read_rates(
            "provider,prefix,price_per_minute,colour\n".as_bytes(),
            &providers(),
        )
        .expect_err("bad");
        assert!(e[0].reason.contains("unknown column \"colour\""));
    }
}
