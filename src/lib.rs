//! akashi server library (skeleton).
