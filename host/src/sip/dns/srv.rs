//! Ordering SRV records (RFC 2782): by priority, lowest first, and within
//! a priority by a weighted random pick, so that a target of weight 60
//! comes first about three times as often as one of weight 20.

use rand::Rng;

/// One SRV record's ordering fields and what it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvTarget<T> {
    pub(super) priority: u16,
    pub(super) weight: u16,
    pub(super) item: T,
}

/// `records` in the order RFC 2782 says to try them.
pub(super) fn order<T>(mut records: Vec<SrvTarget<T>>, rng: &mut impl Rng) -> Vec<T> {
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<SrvTarget<T>> = records.drain(..end).collect();
        // Zero weights first, as RFC 2782 says, so they get a small chance.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let draw = rng.random_range(0..=total);
                let mut running = 0u32;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running >= draw
                    })
                    .unwrap_or(0)
            };
            ordered.push(group.remove(pick).item);
        }
    }
    ordered
}
