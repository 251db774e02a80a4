//! Keys, values and a scattered order shared by the map benchmarks (`map`, `map_appends`).

use ledger::{hash::Hash, map::MapKey};
use sha2::{Digest as _, Sha256};

/// Patient `i`'s map key: uniform, as VRF-derived keys are.
pub(crate) fn key(i: u64) -> MapKey {
    Sha256::new()
        .chain_update(b"akashi bench map key\0")
        .chain_update(i.to_be_bytes())
        .finalize()
        .into()
}

/// Patient `i`'s record value at version `v`.
pub(crate) fn value(i: u64, v: u64) -> Hash {
    Hash(
        Sha256::new()
            .chain_update(i.to_be_bytes())
            .chain_update(v.to_be_bytes())
            .finalize()
            .into(),
    )
}

/// A scattered sequence over `0..n` (multiplicative hashing: the multiplier is odd, so it is a
/// bijection on a power of two and nearly so otherwise).
pub(crate) fn spread(j: u64, n: u64) -> u64 {
    j.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}
