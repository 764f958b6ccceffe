//! The table's notion of time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Microseconds since the table's clock origin.
///
/// A plain integer rather than `Instant` so the same table runs on wall-clock time
/// in the proxy and on the virtual time of a trace in a replay, and so timestamps
/// can be handed to policies, which import no clock.
pub type Micros = u64;

pub(crate) fn duration_to_micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the table reads "now" from.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Tokio's clock, so tests can pause and advance time.
    Tokio { origin: tokio::time::Instant },
    /// Set by the caller: trace replay drives it from the trace's timestamps.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn tokio() -> Self {
        Clock::Tokio {
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn manual() -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(0)))
    }

    pub fn now(&self) -> Micros {
        match self {
            Clock::Tokio { origin } => duration_to_micros(origin.elapsed()),
            Clock::Manual(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a no-op on the tokio clock.
    pub fn advance(&self, by: Micros) -> Micros {
        match self {
            Clock::Manual(cell) => cell.fetch_add(by, Ordering::Relaxed) + by,
            Clock::Tokio { .. } => self.now(),
        }
    }

    /// Sets a manual clock; a no-op on the tokio clock, which only tokio moves.
    pub fn set(&self, now: Micros) {
        if let Clock::Manual(cell) = self {
            cell.store(now, Ordering::Relaxed);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::tokio()
    }
}
