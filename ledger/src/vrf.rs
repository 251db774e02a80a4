//! A verifiable random function: ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381 §5, suite `0x03`).
//!
//! The holder of a secret key maps an input `alpha` to a 64-byte output `beta` that looks random
//! to everyone else, and proves with an 80-byte proof `pi` that `beta` is the one output of
//! `alpha` under its public key. akashi needs this for per-patient completeness: the key under
//! which a patient's entries are listed in a public map must be derived from the patient's id by
//! a function the operator cannot bend (a patient checks the proof with the public key, which the
//! log commits to), yet nobody without the secret key can compute it from an id, so the map
//! reveals nothing about who is in it (as AKD's VRF labels do).
//!
//! Pure and deterministic (no I/O, no randomness in proving). Public keys are validated on
//! parsing (a small-order point is refused, RFC 9381 §5.4.5), proofs on decoding (`s` below the
//! group order). The known-answer tests are the three vectors of RFC 9381 Appendix B.3.
//!
//! ```
//! use ledger::vrf::{VrfPublicKey, VrfSecretKey};
//!
//! let secret = VrfSecretKey::from_seed([7; 32]);
//! let (proof, output) = secret.prove(b"alice");
//! let public = VrfPublicKey::from_bytes(&secret.public().to_bytes())?;
//! assert_eq!(public.verify(b"alice", &proof)?, output);
//! assert!(public.verify(b"bob", &proof).is_err());
//! # Ok::<(), ledger::vrf::VrfError>(())
//! ```

use curve25519_dalek::{
    constants::ED25519_BASEPOINT_POINT,
    edwards::{CompressedEdwardsY, EdwardsPoint},
    scalar::{Scalar, clamp_integer},
};
use sha2::{Digest as _, Sha512};

/// The suite string of ECVRF-EDWARDS25519-SHA512-TAI.
const SUITE: u8 = 0x03;

/// Bytes of an encoded point.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Bytes of the challenge in a proof (`cLen`).
const CHALLENGE_LEN: usize = 16;

/// Bytes of a proof: `Gamma` (32), `c` (16), `s` (32).
pub const PROOF_LEN: usize = 80;

/// Bytes of an output (`beta`, a SHA-512 digest).
pub const OUTPUT_LEN: usize = 64;

/// Why a key or proof was refused. Messages never echo the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VrfError {
    /// A public key is not 32 bytes, not a point, or of small order.
    #[error("not a valid VRF public key")]
    InvalidKey,
    /// A proof is not 80 bytes, its `Gamma` is not a point, or its `s` is not below the order.
    #[error("not a well-formed VRF proof")]
    MalformedProof,
    /// The proof does not prove this output of this input under this key.
    #[error("the VRF proof does not verify")]
    InvalidProof,
}

/// A VRF secret key: a 32-byte seed, expanded as an Ed25519 secret key is (RFC 8032 §5.1.5).
#[derive(Clone)]
pub struct VrfSecretKey {
    scalar: Scalar,
    nonce_prefix: [u8; 32],
    public: VrfPublicKey,
}

/// A VRF public key: a point of prime order's multiple, never of small order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VrfPublicKey {
    point: EdwardsPoint,
    bytes: [u8; PUBLIC_KEY_LEN],
}

/// A proof `pi` that an output belongs to an input under a public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VrfProof([u8; PROOF_LEN]);

/// A VRF output `beta`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VrfOutput(pub [u8; OUTPUT_LEN]);

impl std::fmt::Debug for VrfSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VrfSecretKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VrfPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfPublicKey({})", hex::encode(self.bytes))
    }
}

impl std::fmt::Debug for VrfProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfProof({})", hex::encode(self.0))
    }
}

impl std::fmt::Debug for VrfOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfOutput({})", hex::encode(self.0))
    }
}

impl VrfSecretKey {
    /// The key of a 32-byte seed (the secret key string `SK` of RFC 9381).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let digest = Sha512::digest(seed);
        let (low, high) = digest.split_at(32);
        let mut scalar_bytes = [0u8; 32];
        scalar_bytes.copy_from_slice(low);
        let mut nonce_prefix = [0u8; 32];
        nonce_prefix.copy_from_slice(high);
        let scalar = Scalar::from_bytes_mod_order(clamp_integer(scalar_bytes));
        let point = ED25519_BASEPOINT_POINT * scalar;
        let public = VrfPublicKey {
            point,
            bytes: point.compress().to_bytes(),
        };
        Self {
            scalar,
            nonce_prefix,
            public,
        }
    }

    /// Its public key.
    pub fn public(&self) -> &VrfPublicKey {
        &self.public
    }

    /// `beta` alone, without the proof: one hash to the curve and one scalar multiplication
    /// (about a third of [`VrfSecretKey::prove`]'s work). Equal to the output `prove` returns.
    #[must_use]
    pub fn output(&self, alpha: &[u8]) -> VrfOutput {
        output_of(&(encode_to_curve(&self.public.bytes, alpha) * self.scalar))
    }

    /// The proof and output of `alpha` (RFC 9381 §5.1).
    pub fn prove(&self, alpha: &[u8]) -> (VrfProof, VrfOutput) {
        let h = encode_to_curve(&self.public.bytes, alpha);
        let h_bytes = h.compress().to_bytes();
        let gamma = h * self.scalar;
        // Nonce as RFC 8032 derives Ed25519's (RFC 9381 §5.4.2.2).
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(self.nonce_prefix)
                .chain_update(h_bytes),
        );
        let c = challenge(
            &self.public.point,
            &h,
            &gamma,
            &(ED25519_BASEPOINT_POINT * k),
            &(h * k),
        );
        let s = k + c * self.scalar;
        let mut pi = [0u8; PROOF_LEN];
        let (gamma_part, rest) = pi.split_at_mut(32);
        let (c_part, s_part) = rest.split_at_mut(CHALLENGE_LEN);
        gamma_part.copy_from_slice(&gamma.compress().to_bytes());
        c_part.copy_from_slice(c.to_bytes().split_at(CHALLENGE_LEN).0);
        s_part.copy_from_slice(&s.to_bytes());
        (VrfProof(pi), output_of(&gamma))
    }
}

impl VrfPublicKey {
    /// Parses and validates a public key (RFC 9381 §5.4.5: a point, not of small order).
    ///
    /// # Errors
    ///
    /// [`VrfError::InvalidKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VrfError> {
        let bytes: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| VrfError::InvalidKey)?;
        let point = decode_point(bytes).ok_or(VrfError::InvalidKey)?;
        if point.is_small_order() {
            return Err(VrfError::InvalidKey);
        }
        Ok(Self { point, bytes })
    }

    /// The encoded key.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.bytes
    }

    /// Checks that `proof` proves an output of `alpha` under this key, and returns that output
    /// (RFC 9381 §5.3).
    ///
    /// # Errors
    ///
    /// [`VrfError::InvalidProof`] when it does not.
    pub fn verify(&self, alpha: &[u8], proof: &VrfProof) -> Result<VrfOutput, VrfError> {
        let (gamma, c, s) = proof.decode()?;
        let h = encode_to_curve(&self.bytes, alpha);
        let u = ED25519_BASEPOINT_POINT * s - self.point * c;
        let v = h * s - gamma * c;
        if challenge(&self.point, &h, &gamma, &u, &v) != c {
            return Err(VrfError::InvalidProof);
        }
        Ok(output_of(&gamma))
    }
}

impl VrfProof {
    /// A proof from its 80 bytes (checked when verified or decoded).
    ///
    /// # Errors
    ///
    /// [`VrfError::MalformedProof`] when it is not 80 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VrfError> {
        Ok(Self(
            bytes.try_into().map_err(|_| VrfError::MalformedProof)?,
        ))
    }

    /// The proof's bytes.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        self.0
    }

    /// The output the proof is for (RFC 9381 §5.2 `proof_to_hash`), without verifying it.
    ///
    /// # Errors
    ///
    /// [`VrfError::MalformedProof`].
    pub fn output(&self) -> Result<VrfOutput, VrfError> {
        let (gamma, _, _) = self.decode()?;
        Ok(output_of(&gamma))
    }

    /// `Gamma`, `c` and `s` (RFC 9381 §5.4.4).
    fn decode(&self) -> Result<(EdwardsPoint, Scalar, Scalar), VrfError> {
        let (gamma, rest) = self.0.split_at(32);
        let (c, s) = rest.split_at(CHALLENGE_LEN);
        let gamma = <[u8; 32]>::try_from(gamma)
            .ok()
            .and_then(decode_point)
            .ok_or(VrfError::MalformedProof)?;
        let mut c_bytes = [0u8; 32];
        c_bytes.split_at_mut(CHALLENGE_LEN).0.copy_from_slice(c);
        let s_bytes: [u8; 32] = s.try_into().map_err(|_| VrfError::MalformedProof)?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
            .ok_or(VrfError::MalformedProof)?;
        // A 16-byte challenge is always below the group order.
        Ok((gamma, Scalar::from_bytes_mod_order(c_bytes), s))
    }
}

/// A point from its encoding as RFC 8032 §5.1.3 decodes it: only the canonical encoding (the
/// curve library also accepts `y` at or above the field prime, and a negative zero `x`), so
/// every point has exactly one accepted spelling.
fn decode_point(bytes: [u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(bytes).decompress()?;
    (point.compress().to_bytes() == bytes).then_some(point)
}

/// `beta = SHA-512(suite ‖ 0x03 ‖ cofactor·Gamma ‖ 0x00)` (RFC 9381 §5.2).
fn output_of(gamma: &EdwardsPoint) -> VrfOutput {
    let digest = Sha512::new()
        .chain_update([SUITE, 0x03])
        .chain_update(gamma.mul_by_cofactor().compress().to_bytes())
        .chain_update([0x00])
        .finalize();
    let mut out = [0u8; OUTPUT_LEN];
    out.copy_from_slice(&digest);
    VrfOutput(out)
}

/// The challenge of five points, truncated to 16 bytes (RFC 9381 §5.4.3).
fn challenge(
    y: &EdwardsPoint,
    h: &EdwardsPoint,
    gamma: &EdwardsPoint,
    u: &EdwardsPoint,
    v: &EdwardsPoint,
) -> Scalar {
    let mut hasher = Sha512::new().chain_update([SUITE, 0x02]);
    for point in [y, h, gamma, u, v] {
        hasher.update(point.compress().to_bytes());
    }
    let digest = hasher.chain_update([0x00]).finalize();
    let mut c = [0u8; 32];
    c.split_at_mut(CHALLENGE_LEN)
        .0
        .copy_from_slice(digest.split_at(CHALLENGE_LEN).0);
    Scalar::from_bytes_mod_order(c)
}

/// `encode_to_curve` by try-and-increment (RFC 9381 §5.4.1.1), salted with the encoded public
/// key: the first counter whose hash's first 32 bytes decode to a point, times the cofactor.
fn encode_to_curve(public_key: &[u8; PUBLIC_KEY_LEN], alpha: &[u8]) -> EdwardsPoint {
    // Each counter succeeds with probability about 1/2: 256 failures in a row do not happen.
    for counter in 0..=u8::MAX {
        let digest = Sha512::new()
            .chain_update([SUITE, 0x01])
            .chain_update(public_key)
            .chain_update(alpha)
            .chain_update([counter, 0x00])
            .finalize();
        let mut candidate = [0u8; 32];
        candidate.copy_from_slice(digest.split_at(32).0);
        if let Some(point) = decode_point(candidate) {
            return point.mul_by_cofactor();
        }
    }
    // Probability 2^-256; the identity keeps the function total (and no proof verifies for it).
    EdwardsPoint::default()
}

#[cfg(test)]
mod tests;
