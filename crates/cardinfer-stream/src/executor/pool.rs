//! The bounded pool: at most `slots` streamed blocks exist at once. A slot is taken
//! ("slot free" wait) before a block is read and given back when the block that used it
//! has finished computing. Bytes are accounted per slot and the peak is recorded.

use std::sync::{Condvar, Mutex};

/// Counters of the pool, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks currently holding a slot.
    pub in_use: usize,
    /// Most blocks that ever held a slot at once.
    pub peak_in_use: usize,
    /// Bytes currently held by streamed blocks.
    pub bytes: u64,
    /// Most bytes ever held at once.
    pub peak_bytes: u64,
    /// Blocks streamed in total.
    pub blocks_streamed: u64,
    /// Bytes streamed in total.
    pub bytes_streamed: u64,
}

/// A counting semaphore over `slots`, with byte accounting.
#[derive(Debug)]
pub struct SlotPool {
    slots: usize,
    /// Bytes per slot (the tests check the held bytes against the capacity).
    #[cfg_attr(not(test), allow(dead_code))]
    slot_bytes: u64,
    state: Mutex<PoolStats>,
    freed: Condvar,
}

/// Proof that a slot is held; give it back with [`SlotPool::release`].
#[derive(Debug)]
#[must_use = "a slot must be released"]
pub struct SlotTicket {
    bytes: u64,
}

impl SlotPool {
    /// A pool of `slots` slots of `slot_bytes` each.
    pub fn new(slots: usize, slot_bytes: u64) -> Self {
        Self { slots: slots.max(1), slot_bytes, state: Mutex::new(PoolStats::default()), freed: Condvar::new() }
    }

    /// Capacity in bytes (what counts against the budget).
    #[cfg(test)]
    fn capacity_bytes(&self) -> u64 {
        self.slots as u64 * self.slot_bytes
    }

    /// Waits until a slot is free, then takes it for a block of `bytes`.
    pub fn acquire(&self, bytes: u64) -> SlotTicket {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.in_use >= self.slots {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.in_use += 1;
        state.peak_in_use = state.peak_in_use.max(state.in_use);
        state.bytes += bytes;
        state.peak_bytes = state.peak_bytes.max(state.bytes);
        state.blocks_streamed += 1;
        state.bytes_streamed += bytes;
        SlotTicket { bytes }
    }

    /// Gives a slot back ("slot free").
    pub fn release(&self, ticket: SlotTicket) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_use -= 1;
        state.bytes -= ticket.bytes;
        drop(state);
        self.freed.notify_one();
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn never_more_than_slots_in_use_and_bytes_return_to_zero() {
        let pool = Arc::new(SlotPool::new(2, 100));
        let (tx, rx) = std::sync::mpsc::channel();
        let producer = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    tx.send(pool.acquire(60 + i % 40)).unwrap();
                }
            })
        };
        for ticket in rx {
            let stats = pool.stats();
            assert!(stats.in_use <= 2 && stats.bytes <= pool.capacity_bytes(), "{stats:?}");
            pool.release(ticket);
        }
        producer.join().unwrap();
        let stats = pool.stats();
        assert_eq!((stats.in_use, stats.bytes, stats.blocks_streamed), (0, 0, 50));
        assert!(stats.peak_in_use <= 2 && stats.peak_bytes <= 200);
    }
}
