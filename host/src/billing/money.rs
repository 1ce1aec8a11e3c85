//! Money: integer millionths of the account's currency unit, as in the
//! plugin contract (`micros` in `wit/types.wit`). Never a float.

use std::fmt;
use std::str::FromStr;

/// An amount of money in millionths of the currency unit: `Micros(14_000)`
/// is 0.014. Balances, prices, fees and costs are all `Micros`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number (`0.014`, `12`, `-3.5`).
    #[error("{0:?} is not an amount (write it like 0.014)")]
    Syntax(String),
    /// More than six decimals: the amount cannot be held exactly.
    #[error("{0:?} has more than 6 decimals")]
    TooPrecise(String),
    /// Beyond what the ledger holds.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl Micros {
    /// Nothing.
    pub const ZERO: Micros = Micros(0);

    /// Whole currency units.
    pub const fn units(n: i64) -> Micros {
        Micros(n.saturating_mul(1_000_000))
    }

    /// `self + other`, saturating rather than wrapping.
    pub fn plus(self, other: Micros) -> Micros {
        Micros(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating rather than wrapping.
    pub fn minus(self, other: Micros) -> Micros {
        Micros(self.0.saturating_sub(other.0))
    }
}

impl FromStr for Micros {
    type Err = MoneyError;

    /// Reads a decimal amount exactly: `0.014` is `Micros(14_000)`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let syntax = || MoneyError::Syntax(text.to_string());
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(syntax());
        }
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || !all_digits(fraction) {
            return Err(syntax());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 6 {
            return Err(MoneyError::TooPrecise(text.to_string()));
        }
        let too_large = || MoneyError::TooLarge(text.to_string());
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut frac: i64 = 0;
        for (i, b) in fraction.bytes().enumerate() {
            frac += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
        }
        let value = whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(too_large)?;
        Ok(Micros(if negative { -value } else { value }))
    }
}

impl fmt::Display for Micros {
    /// `0.014`, `0.02604`, `12`, `-1.5`: no trailing zeros, no float.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_exactly() {
        let cases = [
            ("0.014", 14_000),
            ("0.01204", 12_040),
            ("12", 12_000_000),
            (".5", 500_000),
            ("3.", 3_000_000),
            ("-1.25", -1_250_000),
            ("+0.000001", 1),
            (" 1.100000 ", 1_100_000),
        ];
        for (text, micros) in cases {
            assert_eq!(text.parse::<Micros>(), Ok(Micros(micros)), "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_named() {
        assert!(matches!(
            "0.0000001".parse::<Micros>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "1e3".parse::<Micros>(),
            Err(MoneyError::Syntax(_))
        ));
        assert!(matches!("".parse::<Micros>(), Err(MoneyError::Syntax(_))));
        assert!(matches!(".".parse::<Micros>(), Err(MoneyError::Syntax(_))));
        assert!(matches!(
            "1.2.3".parse::<Micros>(),
            Err(MoneyError::Syntax(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Micros>(),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for m in [
            0,
            1,
            14_000,
            26_040,
            1_000_000,
            -1_500_000,
            i64::MAX,
            i64::MIN + 1,
        ] {
            let text = Micros(m).to_string();
            assert_eq!(text.parse::<Micros>(), Ok(Micros(m)), "{text}");
        }
        assert_eq!(Micros(26_040).to_string(), "0.02604");
        assert_eq!(Micros(12_000_000).to_string(), "12");
    }
}
