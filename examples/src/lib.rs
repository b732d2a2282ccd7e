//! Runnable millrace programs; see the `examples` targets.
