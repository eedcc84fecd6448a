//! When did the last handoff notice reach the waiting client? The library emits a `trace`
//! event with the target `redfour::handoff_notice` from its connection reader, the moment a
//! notice is read; this minimal subscriber keeps the instant of the last one and ignores every
//! other span and event (it tells `tracing` so at registration, so they cost nothing).
//!
//! It splits the handoff latency in two: from the release call to the notice's arrival (the
//! round trip and the server), and from there to the waiter holding its guard (the library).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tracing::subscriber::Interest;
use tracing::{span, Event, Metadata, Subscriber};

const TARGET: &str = "redfour::handoff_notice";

static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Installs the subscriber for the whole process (once; later calls do nothing). Returns false
/// when another global subscriber was there first.
pub fn install() -> bool {
    tracing::subscriber::set_global_default(NoticeClock::default()).is_ok()
}

/// The instant of the last notice since the previous call, if one came.
pub fn take() -> Option<Instant> {
    LAST.lock().unwrap_or_else(PoisonError::into_inner).take()
}

#[derive(Default)]
struct NoticeClock {
    next_span: AtomicU64,
}

fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_event() && meta.target() == TARGET
}

impl Subscriber for NoticeClock {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        // Never called for disabled spans; ids must still be non-zero and distinct.
        span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, _: &Event<'_>) {
        *LAST.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
