//! akashi server binary.

fn main() {}
