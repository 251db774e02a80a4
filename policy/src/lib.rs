//! policy (skeleton).
