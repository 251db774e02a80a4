//! proto (skeleton).
