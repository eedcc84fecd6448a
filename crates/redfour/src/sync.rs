//! Locking the crate's own mutexes.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, also when a thread panicked while holding it. Every critical section in this
/// crate is a single insert, remove, read or write of a whole value, so a poisoned mutex still
/// holds consistent data, and a panic elsewhere must not turn into a panic here (the guard's
/// drop, the hub's dispatch and the connection's bookkeeping all take these locks).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_still_locked() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let poisoner = m.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.lock().expect("not poisoned yet");
            panic!("poison the mutex");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
