//! Fraud controls on the numbers themselves: emergency numbers are never
//! dialled (the service is not for emergency calls, as the seed says), and
//! operators deny prefixes such as premium-rate ranges.

/// The emergency numbers refused whatever the configuration says.
pub const EMERGENCY_NUMBERS: [&str; 3] = ["112", "911", "999"];

/// Which numbers may be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    emergency: Vec<String>,
    denied_prefixes: Vec<String>,
}

/// Why a number is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An emergency number, alone or behind a country code.
    #[error("{number} is an emergency number; this service cannot be used for emergency calls")]
    Emergency {
        /// The number as asked for.
        number: String,
    },
    /// The number starts with a denied prefix.
    #[error("calls to {number} are not allowed (prefix {prefix} is barred)")]
    DeniedPrefix {
        /// The number as asked for.
        number: String,
        /// The denied prefix it starts with.
        prefix: String,
    },
    /// Not an international number: digits only, 3 to 15 of them.
    #[error("{number:?} is not a phone number in international format")]
    NotANumber {
        /// The number as asked for.
        number: String,
    },
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&[], &[])
    }
}

impl Policy {
    /// The built-in emergency numbers plus `extra_emergency`, and the
    /// operator's denied prefixes.
    pub fn new(extra_emergency: &[String], denied_prefixes: &[String]) -> Policy {
        let mut emergency: Vec<String> = EMERGENCY_NUMBERS.iter().map(|s| s.to_string()).collect();
        emergency.extend(extra_emergency.iter().cloned());
        Policy {
            emergency,
            denied_prefixes: denied_prefixes.to_vec(),
        }
    }

    /// Checks a phone number (international digits, no `+`) before it is
    /// rated or dialled.
    ///
    /// An emergency number is refused on its own (`112`) and behind a one-
    /// to three-digit country code (`44999`, `1911`): no real subscriber
    /// number is that short, so nothing legitimate is caught.
    pub fn check(&self, number: &str) -> Result<(), Refusal> {
        let digits_only = number.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || number.is_empty() || number.len() > 15 {
            return Err(Refusal::NotANumber {
                number: number.to_string(),
            });
        }
        let emergency = self
            .emergency
            .iter()
            .any(|e| number.ends_with(e.as_str()) && number.len() <= e.len() + 3);
        if emergency {
            return Err(Refusal::Emergency {
                number: number.to_string(),
            });
        }
        if let Some(prefix) = self
            .denied_prefixes
            .iter()
            .find(|p| number.starts_with(p.as_str()))
        {
            return Err(Refusal::DeniedPrefix {
                number: number.to_string(),
                prefix: prefix.clone(),
            });
        }
        if number.len() < 3 {
            return Err(Refusal::NotANumber {
                number: number.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_numbers_are_refused_alone_and_behind_a_country_code() {
        let p = Policy::new(&["110".to_string()], &[]);
        for n in [
            "112", "911", "999", "44999", "1911", "49112", "380112", "110", "49110",
        ] {
            assert!(matches!(p.check(n), Err(Refusal::Emergency { .. })), "{n}");
        }
        for n in ["442071234567", "4915112345678", "11234567", "9991234567"] {
            assert_eq!(p.check(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn denied_prefixes_and_junk() {
        let p = Policy::new(&[], &["44909".to_string(), "1900".to_string()]);
        assert!(matches!(
            p.check("449091234567"),
            Err(Refusal::DeniedPrefix { prefix, .. }) if prefix == "44909"
        ));
        assert!(matches!(
            p.check("19005551234"),
            Err(Refusal::DeniedPrefix { .. })
        ));
        assert_eq!(p.check("442071234567"), Ok(()));
        for n in ["", "12", "+4420", "44 20", "1234567890123456"] {
            assert!(
                matches!(p.check(n), Err(Refusal::NotANumber { .. })),
                "{n:?}"
            );
        }
    }
}
