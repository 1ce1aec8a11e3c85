//! Rating: which providers can carry a number, at what price, and what a
//! leg of a given length costs.
//!
//! Each provider has its own table of destination prefixes; a number is
//! rated per provider by the longest prefix that matches it. Billing is per
//! second unless a rate says otherwise (its increment), with an optional
//! one-off connect fee when the leg is answered.

use std::collections::HashMap;

use super::money::Micros;

/// The price of one destination prefix through one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Price per minute of talk.
    pub price_per_minute: Micros,
    /// Talk time is billed in whole multiples of this many seconds (1 =
    /// per-second billing, the default).
    pub increment_secs: u32,
    /// Charged once when the leg is answered.
    pub connect_fee: Micros,
}

impl Rate {
    /// A per-second rate with no connect fee.
    pub const fn per_minute(price: Micros) -> Rate {
        Rate {
            price_per_minute: price,
            increment_secs: 1,
            connect_fee: Micros::ZERO,
        }
    }

    /// The free rate of SIP and IM legs.
    pub const FREE: Rate = Rate::per_minute(Micros::ZERO);

    /// Whether legs at this rate cost anything.
    pub fn is_paid(&self) -> bool {
        self.price_per_minute.0 > 0 || self.connect_fee.0 > 0
    }

    /// Seconds billed for `talk_ms` milliseconds of answered time: every
    /// started second counts, rounded up to the increment.
    pub fn billed_secs(&self, talk_ms: u64) -> u64 {
        if talk_ms == 0 {
            return 0;
        }
        let secs = talk_ms.div_ceil(1000);
        let step = u64::from(self.increment_secs.max(1));
        secs.div_ceil(step).saturating_mul(step)
    }

    /// What `billed_secs` seconds of an answered leg cost: the connect fee
    /// plus the per-minute price pro rata, rounded up to the micro.
    pub fn cost(&self, billed_secs: u64) -> Micros {
        if billed_secs == 0 {
            return Micros::ZERO;
        }
        let price = u128::try_from(self.price_per_minute.0).unwrap_or(0);
        let talk = (price * u128::from(billed_secs)).div_ceil(60);
        let total = talk + u128::try_from(self.connect_fee.0).unwrap_or(0);
        Micros(i64::try_from(total).unwrap_or(i64::MAX))
    }

    /// What an answered leg costs after `talk_ms` milliseconds.
    pub fn cost_after(&self, talk_ms: u64) -> Micros {
        self.cost(self.billed_secs(talk_ms))
    }
}

/// One provider's offer for a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The provider's name.
    pub provider: String,
    /// The prefix that matched.
    pub prefix: String,
    /// Its rate.
    pub rate: Rate,
}

/// Every enabled provider's rates, for rating numbers in memory.
#[derive(Debug, Clone, Default)]
pub struct RateTable {
    providers: Vec<ProviderRates>,
}

#[derive(Debug, Clone)]
struct ProviderRates {
    name: String,
    by_prefix: HashMap<String, Rate>,
    longest: usize,
}

impl ProviderRates {
    fn longest_match<'n>(&self, number: &'n str) -> Option<(&'n str, Rate)> {
        let top = self.longest.min(number.len());
        (0..=top).rev().find_map(|n| {
            let prefix = number.get(..n)?;
            self.by_prefix.get(prefix).map(|r| (prefix, *r))
        })
    }
}

impl RateTable {
    /// Adds (or replaces) the rate of `provider` for `prefix`.
    pub fn insert(&mut self, provider: &str, prefix: &str, rate: Rate) {
        let i = match self.providers.iter().position(|p| p.name == provider) {
            Some(i) => i,
            None => {
                self.providers.push(ProviderRates {
                    name: provider.to_string(),
                    by_prefix: HashMap::new(),
                    longest: 0,
                });
                self.providers.len() - 1
            }
        };
        let p = &mut self.providers[i];
        p.longest = p.longest.max(prefix.len());
        p.by_prefix.insert(prefix.to_string(), rate);
    }

    /// Every provider that can carry `number` (international digits), with
    /// its longest-prefix rate, in the order the providers were added.
    pub fn offers(&self, number: &str) -> Vec<Offer> {
        self.providers
            .iter()
            .filter_map(|p| {
                let (prefix, rate) = p.longest_match(number)?;
                Some(Offer {
                    provider: p.name.clone(),
                    prefix: prefix.to_string(),
                    rate,
                })
            })
            .collect()
    }

    /// The rate of one named provider for `number`, if it serves it.
    pub fn offer(&self, provider: &str, number: &str) -> Option<Offer> {
        let p = self.providers.iter().find(|p| p.name == provider)?;
        let (prefix, rate) = p.longest_match(number)?;
        Some(Offer {
            provider: p.name.clone(),
            prefix: prefix.to_string(),
            rate,
        })
    }

    /// Rates for the rates page: every (provider, prefix) whose prefix is a
    /// start of `digits` (what a number starting so would pay) or starts
    /// with it (more specific destinations), cheapest first within a
    /// prefix, at most `limit`.
    pub fn search(&self, digits: &str, limit: usize) -> Vec<Offer> {
        let mut found: Vec<Offer> = self
            .providers
            .iter()
            .flat_map(|p| {
                p.by_prefix
                    .iter()
                    .filter(|(prefix, _)| {
                        digits.starts_with(prefix.as_str()) || prefix.starts_with(digits)
                    })
                    .map(|(prefix, rate)| Offer {
                        provider: p.name.clone(),
                        prefix: prefix.clone(),
                        rate: *rate,
                    })
            })
            .collect();
        found.sort_by(|a, b| {
            (
                a.prefix.len(),
                &a.prefix,
                a.rate.price_per_minute,
                &a.provider,
            )
                .cmp(&(
                    b.prefix.len(),
                    &b.prefix,
                    b.rate.price_per_minute,
                    &b.provider,
                ))
        });
        found.truncate(limit);
        found
    }

    /// How many (provider, prefix) rates the table holds.
    pub fn len(&self) -> usize {
        self.providers.iter().map(|p| p.by_prefix.len()).sum()
    }

    /// Whether the table holds no rate at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(micros: i64) -> Rate {
        Rate::per_minute(Micros(micros))
    }

    #[test]
    fn longest_prefix_wins_per_provider() {
        let mut t = RateTable::default();
        t.insert("PROXICOM", "44", rate(20_000));
        t.insert("PROXICOM", "4420", rate(14_000));
        t.insert("PROXICOM", "447", rate(90_000));
        t.insert("PAKLINE", "4", rate(30_000));
        t.insert("PAKLINE", "92", rate(12_040));
        let offers = t.offers("442071234567");
        assert_eq!(offers.len(), 2);
        assert_eq!(
            (offers[0].prefix.as_str(), offers[0].rate),
            ("4420", rate(14_000))
        );
        assert_eq!(
            (offers[1].prefix.as_str(), offers[1].rate),
            ("4", rate(30_000))
        );
        assert_eq!(
            t.offer("PROXICOM", "447700900123").map(|o| o.rate),
            Some(rate(90_000))
        );
        assert_eq!(t.offer("PROXICOM", "33123456789"), None);
        assert_eq!(t.offers("923001234567").len(), 1);
        assert!(t.offers("1").is_empty());
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn per_second_billing_with_increments_and_fees() {
        let r = rate(14_000);
        assert_eq!(r.billed_secs(0), 0);
        assert_eq!(r.billed_secs(1), 1);
        assert_eq!(r.billed_secs(5_000), 5);
        assert_eq!(r.billed_secs(5_001), 6);
        // 0.014 per minute for 5 s = 0.0011666… → rounded up to the micro.
        assert_eq!(r.cost(5), Micros(1_167));
        assert_eq!(r.cost(60), Micros(14_000));
        let sixty_sixty = Rate {
            price_per_minute: Micros(60_000),
            increment_secs: 60,
            connect_fee: Micros(5_000),
        };
        assert_eq!(sixty_sixty.billed_secs(1_000), 60);
        assert_eq!(sixty_sixty.billed_secs(61_000), 120);
        assert_eq!(sixty_sixty.cost_after(61_000), Micros(125_000));
        assert_eq!(
            sixty_sixty.cost_after(0),
            Micros::ZERO,
            "unanswered: no fee"
        );
        assert!(!Rate::FREE.is_paid() && Rate::FREE.cost(3600) == Micros::ZERO);
        let huge = Rate::per_minute(Micros(i64::MAX));
        assert_eq!(
            huge.cost(u64::MAX / 2),
            Micros(i64::MAX),
            "saturates, never wraps"
        );
    }
}
