//! Replies waiting for the chat connection: bounded, the oldest dropped
//! (and counted) when full, so an outage cannot grow memory without end.

use std::collections::VecDeque;

/// A bounded first-in first-out queue that drops its oldest entry when full.
#[derive(Debug)]
pub struct Outbox<T> {
    queue: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Outbox<T> {
    /// An empty outbox holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Queues `item`, dropping the oldest entry if the outbox is full.
    pub fn push(&mut self, item: T) {
        if self.queue.len() == self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(item);
    }

    /// Takes every queued entry, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Entries dropped so far because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_dropped_and_counted() {
        let mut o = Outbox::new(3);
        for i in 0..5 {
            o.push(i);
        }
        assert_eq!((o.len(), o.dropped()), (3, 2));
        assert_eq!(o.drain().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(o.is_empty());
    }
}
