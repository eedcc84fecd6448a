//! The synchronous facade.
