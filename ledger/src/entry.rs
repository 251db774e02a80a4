//! The log entry format (docs/design.md §3): the public leaf that goes into the Merkle tree, and the
//! private body that the leaf commits to.
//!
//! A leaf is short human-readable UTF-8 text that anyone may read:
//!
//! ```text
//! akashi/v1 <kind>
//! day <YYYY-MM-DD>
//! <attribute name> <attribute value>      (zero or more, in the order given)
//! body <64 lowercase hex: SHA-256 of the encoded body>
//! ```
//!
//! each line ending in `\n`. Decoding is strict: only the exact bytes that [`Leaf::encode`]
//! produces decode, so a leaf has one encoding and its hash is stable.
//!
//! A body is a 16-byte random nonce followed by an opaque payload; the nonce keeps the commitment
//! from revealing a payload that could be guessed.
//!
//! This module deliberately knows nothing about what kinds or attributes mean (consent events,
//! decisions, directory changes are defined where they are made), and does not encode payloads.
//! It must never be given personal data for the leaf: that goes into the body only.
//! Errors never echo attribute values or payloads back.
//!
//! ```
//! use ledger::entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf, verify_commitment};
//!
//! let body = Body::try_new(b"private details".to_vec(), &mut rand::rngs::OsRng)?;
//! let leaf = Leaf::new(
//!     EntryKind::new("decision")?,
//!     Day::parse("2025-03-14")?,
//!     vec![(AttrName::new("purpose")?, AttrValue::new("research")?)],
//!     body.commitment(),
//! )?;
//! let bytes = leaf.encode();
//! assert!(bytes.starts_with(b"akashi/v1 decision\nday 2025-03-14\npurpose research\nbody "));
//! assert_eq!(Leaf::decode(&bytes)?, leaf);
//! verify_commitment(&leaf, &body.encode())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use rand::{CryptoRng, RngCore};

use crate::hash::{Hash, hash_leaf};

/// The first word of every leaf: format and version.
pub const LEAF_MAGIC: &str = "akashi/v1";

/// The largest encoded leaf, in bytes.
pub const MAX_LEAF_SIZE: usize = 4096;

/// The most attributes a leaf may carry.
pub const MAX_ATTRIBUTES: usize = 32;

/// The longest entry kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;

/// The longest attribute name, in bytes.
pub const MAX_ATTR_NAME_LEN: usize = 32;

/// The longest attribute value, in bytes.
pub const MAX_ATTR_VALUE_LEN: usize = 256;

/// The length of the random nonce that starts every body.
pub const BODY_NONCE_LEN: usize = 16;

/// The largest body payload, in bytes (the encoded body adds [`BODY_NONCE_LEN`]).
pub const MAX_BODY_SIZE: usize = 1 << 20;

/// Attribute names taken by the fixed lines of a leaf.
const RESERVED_NAMES: [&str; 2] = ["body", "day"];

/// What kind of entry a leaf records: 1 to 64 of `a-z 0-9 . _ -`, e.g. `consent.opt_out`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKind(String);

impl EntryKind {
    /// Validates an entry kind.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidKind`] when it is empty, too long, or has other characters.
    pub fn new(kind: &str) -> Result<Self, EntryError> {
        let ok = (1..=MAX_KIND_LEN).contains(&kind.len())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(EntryError::InvalidKind { len: kind.len() });
        }
        Ok(Self(kind.to_owned()))
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An attribute name: 1 to 32 of `a-z 0-9 _ -`, other than `day` and `body`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrName(String);

impl AttrName {
    /// Validates an attribute name.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidAttrName`] when it is empty, too long, or has other characters, and
    /// [`EntryError::ReservedAttrName`] for `day` and `body`.
    pub fn new(name: &str) -> Result<Self, EntryError> {
        let ok = (1..=MAX_ATTR_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(EntryError::InvalidAttrName { len: name.len() });
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(EntryError::ReservedAttrName {
                name: name.to_owned(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An attribute value: 1 to 256 bytes of printable ASCII, no spaces (`!` to `~`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrValue(String);

impl AttrValue {
    /// Validates an attribute value.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidAttrValue`] when it is empty, too long, or has other characters.
    pub fn new(value: &str) -> Result<Self, EntryError> {
        let ok = (1..=MAX_ATTR_VALUE_LEN).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(EntryError::InvalidAttrValue { len: value.len() });
        }
        Ok(Self(value.to_owned()))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

text_newtype_impls!(EntryKind, AttrName, AttrValue);

/// A calendar day (proleptic Gregorian, UTC), written `YYYY-MM-DD`, years 0000 to 9999.
///
/// The fields are public for convenience; [`Day::new`] and [`Day::parse`] validate, and a leaf
/// holding an impossible day is rejected by [`Leaf::validate`] and [`Leaf::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    /// The year, 0 to 9999.
    pub year: u16,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 28, 29, 30 or 31.
    pub day: u8,
}

impl Day {
    /// A validated day.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidDay`] for a year above 9999 or a month or day that does not exist.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, EntryError> {
        let candidate = Self { year, month, day };
        if !candidate.is_valid() {
            return Err(EntryError::InvalidDay);
        }
        Ok(candidate)
    }

    /// Parses exactly `YYYY-MM-DD`.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidDay`] for any other text or a day that does not exist.
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        let b = text.as_bytes();
        let well_formed = b.len() == 10
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                _ => c.is_ascii_digit(),
            });
        if !well_formed {
            return Err(EntryError::InvalidDay);
        }
        let field = |range: std::ops::Range<usize>| {
            text.get(range)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or(EntryError::InvalidDay)
        };
        let (year, month, day) = (field(0..4)?, field(5..7)?, field(8..10)?);
        let (Ok(month), Ok(day)) = (u8::try_from(month), u8::try_from(day)) else {
            return Err(EntryError::InvalidDay);
        };
        Self::new(year, month, day)
    }

    /// The UTC day that contains this Unix time.
    ///
    /// # Errors
    ///
    /// [`EntryError::DayOutOfRange`] when the day falls outside years 0000 to 9999.
    pub fn from_unix_seconds(seconds: i64) -> Result<Self, EntryError> {
        let days = seconds.div_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        match u16::try_from(year) {
            Ok(year) if year <= 9999 => Ok(Self { year, month, day }),
            _ => Err(EntryError::DayOutOfRange { seconds }),
        }
    }

    /// The Unix time of this day's first second (UTC).
    pub fn to_unix_seconds(self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day) * 86_400
    }

    /// Whether the day exists.
    pub fn is_valid(self) -> bool {
        self.year <= 9999
            && (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The public part of a log entry: the exact bytes hashed into the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Leaf {
    /// What kind of entry this is.
    pub kind: EntryKind,
    /// The day the entry was made (UTC), deliberately coarse.
    pub day: Day,
    /// Public attributes, in order, with distinct names.
    pub attributes: Vec<(AttrName, AttrValue)>,
    /// SHA-256 of the encoded body ([`Body::commitment`]).
    pub commitment: Hash,
}

impl Leaf {
    /// A validated leaf.
    ///
    /// # Errors
    ///
    /// As for [`Leaf::validate`].
    pub fn new(
        kind: EntryKind,
        day: Day,
        attributes: Vec<(AttrName, AttrValue)>,
        commitment: Hash,
    ) -> Result<Self, EntryError> {
        let leaf = Self {
            kind,
            day,
            attributes,
            commitment,
        };
        leaf.validate()?;
        Ok(leaf)
    }

    /// Checks what the field types alone cannot: the day exists, there are at most
    /// [`MAX_ATTRIBUTES`] attributes with distinct names, and the encoding fits in
    /// [`MAX_LEAF_SIZE`]. A leaf that passes encodes to bytes that [`Leaf::decode`] accepts.
    ///
    /// # Errors
    ///
    /// [`EntryError::InvalidDay`], [`EntryError::TooManyAttributes`],
    /// [`EntryError::DuplicateAttribute`], [`EntryError::LeafTooLarge`].
    pub fn validate(&self) -> Result<(), EntryError> {
        if !self.day.is_valid() {
            return Err(EntryError::InvalidDay);
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(EntryError::TooManyAttributes {
                got: self.attributes.len(),
                max: MAX_ATTRIBUTES,
            });
        }
        for (i, (name, _)) in self.attributes.iter().enumerate() {
            if self
                .attributes
                .iter()
                .take(i)
                .any(|(other, _)| other == name)
            {
                return Err(EntryError::DuplicateAttribute {
                    name: name.to_string(),
                });
            }
        }
        let size = self.encoded_len();
        if size > MAX_LEAF_SIZE {
            return Err(EntryError::LeafTooLarge {
                size,
                max: MAX_LEAF_SIZE,
            });
        }
        Ok(())
    }

    /// The leaf's bytes. Only a leaf that passes [`Leaf::validate`] (as every leaf built by
    /// [`Leaf::new`] or [`Leaf::decode`] does) encodes to bytes that decode again.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.encoded_len());
        out.push_str(LEAF_MAGIC);
        out.push(' ');
        out.push_str(self.kind.as_str());
        out.push_str("\nday ");
        out.push_str(&self.day.to_string());
        out.push('\n');
        for (name, value) in &self.attributes {
            out.push_str(name.as_str());
            out.push(' ');
            out.push_str(value.as_str());
            out.push('\n');
        }
        out.push_str("body ");
        out.push_str(&self.commitment.to_hex());
        out.push('\n');
        out.into_bytes()
    }

    /// Decodes a leaf, strictly: only bytes equal to the [`Leaf::encode`] output of a valid leaf
    /// are accepted.
    ///
    /// # Errors
    ///
    /// [`EntryError::LeafTooLarge`], [`EntryError::MalformedLeaf`] naming the first bad line,
    /// and the validation errors of the parts.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_LEAF_SIZE {
            return Err(EntryError::LeafTooLarge {
                size: bytes.len(),
                max: MAX_LEAF_SIZE,
            });
        }
        let malformed = |line| EntryError::MalformedLeaf { line };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(0))?;
        let body = text.strip_suffix('\n').ok_or(malformed(0))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let (first, rest) = lines.split_first().ok_or(malformed(1))?;
        let (last, middle) = rest.split_last().ok_or(malformed(2))?;
        let (day_line, attr_lines) = middle.split_first().ok_or(malformed(2))?;

        let kind = first
            .strip_prefix(LEAF_MAGIC)
            .and_then(|s| s.strip_prefix(' '))
            .ok_or(malformed(1))?;
        let kind = EntryKind::new(kind)?;
        let day = Day::parse(day_line.strip_prefix("day ").ok_or(malformed(2))?)?;
        if attr_lines.len() > MAX_ATTRIBUTES {
            return Err(EntryError::TooManyAttributes {
                got: attr_lines.len(),
                max: MAX_ATTRIBUTES,
            });
        }
        let mut attributes = Vec::with_capacity(attr_lines.len());
        for (i, line) in attr_lines.iter().enumerate() {
            let (name, value) = line.split_once(' ').ok_or(malformed(i + 3))?;
            attributes.push((AttrName::new(name)?, AttrValue::new(value)?));
        }
        let hex = last.strip_prefix("body ").ok_or(malformed(lines.len()))?;
        let lowercase_hex = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lowercase_hex {
            return Err(malformed(lines.len()));
        }
        let commitment = Hash::from_hex(hex).map_err(|_| malformed(lines.len()))?;
        let leaf = Self::new(kind, day, attributes, commitment)?;
        // Belt and braces: the parts above admit only one spelling, so this always holds.
        if leaf.encode() != bytes {
            return Err(malformed(0));
        }
        Ok(leaf)
    }

    /// The value of the attribute `name`, if the leaf has it.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_str())
    }

    /// The attributes as `(name, value)` text, in order.
    pub fn attribute_texts(&self) -> Vec<(&str, &str)> {
        self.attributes
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// The RFC 9162 leaf hash of the encoded leaf.
    pub fn leaf_hash(&self) -> Hash {
        hash_leaf(&self.encode())
    }

    fn encoded_len(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(n, v)| n.0.len() + v.0.len() + 2)
            .sum();
        LEAF_MAGIC.len() + 1 + self.kind.0.len() + 1 + "day YYYY-MM-DD\n".len() + attrs + 70
    }
}

/// The private part of a log entry: a random nonce and an opaque payload, encoded as
/// `nonce || payload`. Its `Debug` output shows sizes only, never the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Body {
    /// Fresh random bytes, so the commitment reveals nothing about a guessable payload.
    pub nonce: [u8; BODY_NONCE_LEN],
    /// The payload (personal data; never logged).
    pub payload: Vec<u8>,
}

impl Body {
    /// A body with a fresh nonce. The size is not checked here: use [`Body::try_new`] for
    /// payloads from outside, since [`Body::decode`] rejects payloads over [`MAX_BODY_SIZE`].
    pub fn new(payload: Vec<u8>, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut nonce = [0u8; BODY_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Self { nonce, payload }
    }

    /// A body with a fresh nonce, refusing payloads over [`MAX_BODY_SIZE`].
    ///
    /// # Errors
    ///
    /// [`EntryError::BodyTooLarge`].
    pub fn try_new(
        payload: Vec<u8>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, EntryError> {
        check_body_size(payload.len().saturating_add(BODY_NONCE_LEN))?;
        Ok(Self::new(payload, rng))
    }

    /// `nonce || payload`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_NONCE_LEN + self.payload.len());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Splits `nonce || payload`.
    ///
    /// # Errors
    ///
    /// [`EntryError::BodyTooShort`] below [`BODY_NONCE_LEN`] bytes, [`EntryError::BodyTooLarge`]
    /// above [`BODY_NONCE_LEN`] + [`MAX_BODY_SIZE`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        check_body_size(bytes.len())?;
        let (nonce, payload) = bytes
            .split_first_chunk::<BODY_NONCE_LEN>()
            .ok_or(EntryError::BodyTooShort { size: bytes.len() })?;
        Ok(Self {
            nonce: *nonce,
            payload: payload.to_vec(),
        })
    }

    /// `SHA-256(encode())`: what the leaf's `body` line holds.
    pub fn commitment(&self) -> Hash {
        Hash::sha256(&self.encode())
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Checks that `body_bytes` (an encoded body) is the body the leaf commits to.
///
/// # Errors
///
/// [`EntryError::BodyTooLarge`] or [`EntryError::BodyTooShort`] for impossible sizes, and
/// [`EntryError::CommitmentMismatch`] when the hash differs.
pub fn verify_commitment(leaf: &Leaf, body_bytes: &[u8]) -> Result<(), EntryError> {
    check_body_size(body_bytes.len())?;
    if body_bytes.len() < BODY_NONCE_LEN {
        return Err(EntryError::BodyTooShort {
            size: body_bytes.len(),
        });
    }
    if Hash::sha256(body_bytes) != leaf.commitment {
        return Err(EntryError::CommitmentMismatch);
    }
    Ok(())
}

/// Why an entry, leaf or body was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The body is larger than [`BODY_NONCE_LEN`] + [`MAX_BODY_SIZE`].
    #[error("body is {size} bytes, more than the limit of {max}")]
    BodyTooLarge {
        /// The encoded body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is shorter than its nonce.
    #[error("body is {size} bytes, shorter than its nonce")]
    BodyTooShort {
        /// The encoded body's size.
        size: usize,
    },
    /// The body does not hash to the leaf's commitment.
    #[error("body does not match the leaf's commitment")]
    CommitmentMismatch,
    /// The time is outside the years 0000 to 9999.
    #[error("unix time {seconds} is outside the years 0000 to 9999")]
    DayOutOfRange {
        /// The time given.
        seconds: i64,
    },
    /// Two attributes share a name.
    #[error("attribute `{name}` appears more than once")]
    DuplicateAttribute {
        /// The repeated name.
        name: String,
    },
    /// An attribute name is not 1 to 32 of `a-z 0-9 -`.
    #[error("attribute name of {len} bytes is not 1 to 32 of a-z, 0-9 and -")]
    InvalidAttrName {
        /// The name's length.
        len: usize,
    },
    /// An attribute value is not 1 to 256 bytes of printable ASCII without spaces.
    #[error(
        "attribute value of {len} bytes is not 1 to 256 printable ascii characters without spaces"
    )]
    InvalidAttrValue {
        /// The value's length.
        len: usize,
    },
    /// A day is not `YYYY-MM-DD` or does not exist.
    #[error("day is not an existing date written YYYY-MM-DD")]
    InvalidDay,
    /// An entry kind is not 1 to 64 of `a-z 0-9 . -`.
    #[error("entry kind of {len} bytes is not 1 to 64 of a-z, 0-9, . and -")]
    InvalidKind {
        /// The kind's length.
        len: usize,
    },
    /// The encoded leaf is larger than [`MAX_LEAF_SIZE`].
    #[error("leaf is {size} bytes, more than the limit of {max}")]
    LeafTooLarge {
        /// The leaf's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A leaf line is malformed.
    #[error("malformed leaf at line {line}")]
    MalformedLeaf {
        /// One-based line number; 0 when the leaf as a whole is malformed (not UTF-8, no final
        /// newline).
        line: usize,
    },
    /// An attribute is named `day` or `body`.
    #[error("attribute name `{name}` is reserved")]
    ReservedAttrName {
        /// The reserved name.
        name: String,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("leaf has {got} attributes, more than the limit of {max}")]
    TooManyAttributes {
        /// How many attributes.
        got: usize,
        /// The limit.
        max: usize,
    },
}

fn check_body_size(size: usize) -> Result<(), EntryError> {
    let max = BODY_NONCE_LEN + MAX_BODY_SIZE;
    if size > max {
        return Err(EntryError::BodyTooLarge { size, max });
    }
    Ok(())
}

fn is_leap_year(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

// Calendar arithmetic on a year that starts in March, so the leap day is the last day of the year;
// 400 Gregorian years (an "era") are exactly 146 097 days. Day 0 is 1970-01-01, which is day
// 719 468 counted from 0000-03-01.

const DAYS_FROM_0000_03_01_TO_EPOCH: i64 = 719_468;
const DAYS_PER_ERA: i64 = 146_097;

/// (year, month, day) of the day `days` after 1970-01-01. Works for every `i64 / 86400` input.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + DAYS_FROM_0000_03_01_TO_EPOCH;
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z.rem_euclid(DAYS_PER_ERA); // 0 ..= 146 096
    // Years into the era: remove the leap days (one per 4 years, except per 100, except per 400).
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, each 5-month block being 153 days.
    let month_from_march = (5 * day_of_year + 2) / 153; // 0 ..= 11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // 1 ..= 31
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    // INVARIANT: month is 1..=12 and day 1..=31 by construction, so both fit in u8.
    (
        year,
        u8::try_from(month).unwrap_or(0),
        u8::try_from(day).unwrap_or(0),
    )
}

/// Days from 1970-01-01 to the given day (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_FROM_0000_03_01_TO_EPOCH
}

#[cfg(test)]
mod tests;
