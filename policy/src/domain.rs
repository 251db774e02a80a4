//! The typed domain of akashi: identifiers, the closed vocabularies of docs/api.md (purposes, levels,
//! recipient classes, actions, roles, data categories) with their hierarchies, timestamps, and the
//! directory and consent records that log entries carry.
//!
//! Everything here is parsed from outside strings (gRPC fields, JSON log bodies) with a typed
//! error that names what is wrong, and serialises back to the same strings. This module holds no
//! state and knows nothing of Cedar; it deliberately does not decide anything (see
//! [`crate::engine`]) and does not store anything (see [`crate::state`]).
//!
//! # Hierarchies
//!
//! Purposes (a request for a purpose is covered by a consent or opt-out for the purpose or any of
//! its ancestors):
//!
//! ```text
//! treatment ⊃ emergency          research ⊃ clinical_trial
//! product_development   insurance   health_guidance   public_health   marketing
//! facility_operations
//! ```
//!
//! Emergency care is a kind of treatment, so an inter-facility sharing consent for `treatment`
//! also covers a view for `emergency`; a consent for `emergency` alone does not cover ordinary
//! treatment.
//!
//! Data categories:
//!
//! ```text
//! general ⊃ clinical ⊃ {diagnosis, medication, lab_result, imaging, procedure, allergy,
//!                       vital_sign, clinical_note}
//!         ⊃ checkup  ⊃ {checkup_result, checkup_questionnaire}
//!         ⊃ claims
//!         ⊃ lifelog
//! genomic            (outside `general`: must be named explicitly)
//! mental_health      (outside `general`: must be named explicitly)
//! ```
//!
//! There is deliberately no catch-all category: genomic and mental-health data are sensitive
//! enough that a consent must name them.
//!
//! # Time
//!
//! [`Timestamp`] is an instant in UTC, serialised as RFC 3339. A consent's validity period is
//! half-open: it is in force at `t` when `valid_from <= t` (or no `valid_from`) and
//! `t < valid_until` (or no `valid_until`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use unicode_normalization::UnicodeNormalization as _;

#[cfg(test)]
mod tests;

/// Longest identifier (organisation, facility, group, clinician, consent, department) in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest display name (organisation, facility) in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most purposes a consent or opt-out may list.
pub const MAX_PURPOSES: usize = 16;
/// Most data categories a consent may list.
pub const MAX_CATEGORIES: usize = 32;
/// Most named recipients a consent may list.
pub const MAX_RECIPIENTS: usize = 64;
/// Most recipient classes a consent may list.
pub const MAX_RECIPIENT_CLASSES: usize = 16;
/// Most excluded departments a facility or facility group may list.
pub const MAX_EXCLUDED_DEPARTMENTS: usize = 64;
/// Most excluded patients a facility or facility group may list.
pub const MAX_EXCLUDED_PATIENTS: usize = 10_000;

/// Why a value from outside could not be parsed or is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// A required value is empty.
    #[error("{field} is empty")]
    Empty {
        /// What was being parsed.
        field: &'static str,
    },
    /// A value is longer than its cap.
    #[error("{field} is too long ({len} bytes, at most {max})")]
    TooLong {
        /// What was being parsed.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// An identifier holds a character outside `[A-Za-z0-9._:@-]`.
    #[error("{field} `{value}` may only hold ASCII letters, digits and `._:@-`")]
    BadIdentifier {
        /// What was being parsed.
        field: &'static str,
        /// The value (already known to be at most [`MAX_ID_LEN`] bytes), with control
        /// characters escaped.
        value: String,
    },
    /// A department name holds a character that is not a letter, digit or combining mark (of
    /// any script), nor one of `._:@-・`.
    #[error(
        "{field} `{value}` may only hold letters, digits and combining marks of any script, \
         and `._:@-・`"
    )]
    BadDepartment {
        /// What was being parsed.
        field: &'static str,
        /// The value (already known to be at most [`MAX_ID_LEN`] bytes), with control
        /// characters escaped.
        value: String,
    },
    /// A patient pseudonym is not 64 lowercase hex characters. The value is not repeated.
    #[error("patient pseudonym must be 64 lowercase hex characters")]
    BadSubject,
    /// A display name holds a control character.
    #[error("{field} holds a control character")]
    ControlCharacter {
        /// What was being parsed.
        field: &'static str,
    },
    /// A value is not one of a closed vocabulary.
    #[error("unknown {field} `{value}` (expected one of: {expected})")]
    UnknownValue {
        /// What was being parsed.
        field: &'static str,
        /// The value, cut to [`MAX_ID_LEN`] bytes.
        value: String,
        /// The accepted values, comma separated.
        expected: &'static str,
    },
    /// A list has more entries than its cap.
    #[error("{field} has too many entries ({len}, at most {max})")]
    TooMany {
        /// What was being parsed.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A list that must not be empty is empty.
    #[error("{field} must not be empty")]
    EmptyList {
        /// What was being parsed.
        field: &'static str,
    },
    /// A timestamp is not RFC 3339 or is out of range.
    #[error("{field} `{value}` is not an RFC 3339 timestamp between years 1970 and 9999")]
    BadTimestamp {
        /// What was being parsed.
        field: &'static str,
        /// The value, cut to [`MAX_ID_LEN`] bytes.
        value: String,
    },
    /// A validity period ends before (or when) it starts.
    #[error("valid_until must be after valid_from")]
    EmptyValidity,
    /// A consent names neither recipients nor recipient classes.
    #[error("consent names no recipients and no recipient classes")]
    NoRecipients,
    /// A consent in a grant is already marked revoked.
    #[error("a granted consent cannot already be revoked")]
    GrantedRevoked,
}

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

/// The one normalisation of identifiers from outside (docs/design.md): Unicode NFC, then ASCII
/// letters lowercased, so `Psychiatry` and `psychiatry` (or a decomposed and a composed `科`)
/// name the same thing. Letters outside ASCII keep their case.
///
/// Only identifiers parsed from requests are normalised ([`OrgId::new`] and the other
/// constructors, and `FromStr`); decoding a logged event never is (see the identifier types),
/// because a replay must see the bytes that were logged.
pub fn normalize_id(value: &str) -> String {
    let mut normalized = if unicode_normalization::is_nfc(value) {
        value.to_owned()
    } else {
        value.nfc().collect()
    };
    normalized.make_ascii_lowercase();
    normalized
}

fn check_length(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(DomainError::TooLong {
            field,
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    Ok(())
}

fn is_ascii_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

/// Checks an identifier that must be ASCII: it is a storage key, a Cedar entity id and a public
/// leaf value as it is.
fn check_identifier(field: &'static str, value: &str) -> Result<(), DomainError> {
    check_length(field, value)?;
    if !value.chars().all(is_ascii_id_char) {
        return Err(DomainError::BadIdentifier {
            field,
            value: value.escape_debug().to_string(),
        });
    }
    Ok(())
}

/// Checks a department name: besides the ASCII identifier characters, letters, digits and
/// combining marks of any script and the katakana middle dot `・`, so that `精神科` or
/// `内分泌・代謝内科` are names. Never `/` (department entity ids are `<facility>/<name>`), `,`,
/// `%` or white space (public leaves list departments comma separated, percent-encoded).
fn check_department(field: &'static str, value: &str) -> Result<(), DomainError> {
    check_length(field, value)?;
    let ok = value.chars().all(|c| {
        is_ascii_id_char(c)
            || (!c.is_ascii()
                && (c.is_alphanumeric()
                    || unicode_normalization::char::is_combining_mark(c)
                    || c == '・'))
    });
    if !ok {
        return Err(DomainError::BadDepartment {
            field,
            value: value.escape_debug().to_string(),
        });
    }
    Ok(())
}

fn cut(value: &str) -> String {
    let mut end = value.len().min(MAX_ID_LEN);
    while !value.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    value
        .get(..end)
        .unwrap_or_default()
        .escape_debug()
        .to_string()
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:ident, $charset:expr) => {
        $(#[$doc])*
        ///
        #[doc = $charset]
        ///
        /// Two constructors, on purpose: [`Self::new`] (and `FromStr`, `TryFrom<String>`) parse a
        /// value from outside and normalise it first ([`normalize_id`]); deserialising (a logged
        /// event, a stored record) checks the characters but keeps the bytes as they are, so a
        /// replay sees exactly what was logged.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an identifier from outside: normalised ([`normalize_id`]), then checked.
            ///
            /// # Errors
            ///
            /// [`DomainError`] naming the field when it is empty, too long or holds other
            /// characters.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = normalize_id(&value.into());
                $check($field, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // INVARIANT: never normalised here. A logged id keeps its bytes, so a replay
                // compares what the original decision compared.
                let value = String::deserialize(deserializer)?;
                $check($field, &value).map_err(serde::de::Error::custom)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// The character set of the ASCII identifiers, for their docs.
macro_rules! ascii_id {
    () => {
        "1 to [`MAX_ID_LEN`] ASCII letters, digits or `._:@-`, so it is safe in storage keys, \
         Cedar entity ids and public leaf attributes as it is."
    };
}

identifier!(
    /// An organisation id (a recipient of data; facilities are organisations too).
    OrgId,
    "organisation id",
    check_identifier,
    ascii_id!()
);
identifier!(
    /// A facility id (hospital or checkup centre). The same id names its organisation.
    FacilityId,
    "facility id",
    check_identifier,
    ascii_id!()
);
identifier!(
    /// A facility group id.
    GroupId,
    "facility group id",
    check_identifier,
    ascii_id!()
);
identifier!(
    /// A clinician id.
    ClinicianId,
    "clinician id",
    check_identifier,
    ascii_id!()
);
identifier!(
    /// A consent id, chosen by the server when it grants the consent.
    ConsentId,
    "consent id",
    check_identifier,
    ascii_id!()
);
identifier!(
    /// A department name inside a facility, e.g. `psychiatry`.
    Department,
    "department",
    check_department,
    "1 to [`MAX_ID_LEN`] bytes of letters, digits and combining marks of any script, or \
     `._:@-・` (e.g. `psychiatry`, `精神科`). Public leaves percent-encode what is not \
     printable ASCII."
);
identifier!(
    /// A data category as named in a request. It may name a category that akashi does not know,
    /// which the decision denies with a reason (see [`CategoryName::category`]).
    CategoryName,
    "data category",
    check_identifier,
    ascii_id!()
);

impl OrgId {
    /// The organisation id of a facility (facilities are registered as organisations with the same
    /// id, docs/api.md).
    pub fn of_facility(facility: &FacilityId) -> Self {
        // INVARIANT: both types accept exactly the same strings.
        Self(facility.0.clone())
    }
}

impl ConsentId {
    /// A consent id made from 16 random bytes chosen by the caller: `c_` and 32 hex characters.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        Self(format!("c_{}", hex::encode(bytes)))
    }
}

impl CategoryName {
    /// The known category this names, if any.
    pub fn category(&self) -> Option<DataCategory> {
        DataCategory::from_str(&self.0).ok()
    }
}

impl From<DataCategory> for CategoryName {
    fn from(category: DataCategory) -> Self {
        Self(category.as_str().to_owned())
    }
}

/// A patient pseudonym: `HMAC-SHA256(subject_key, patient_id)` as 64 lowercase hex characters,
/// computed by the server. This crate never sees raw patient ids.
///
/// `Debug` shows only the first 8 characters, so a stray `{:?}` does not put a whole pseudonym in
/// a log. There is deliberately no `Display`: use [`SubjectId::as_str`] where the full value is
/// needed (storage keys, private bodies).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectId(String);

impl SubjectId {
    /// Length of a pseudonym in hex characters.
    pub const LEN: usize = 64;

    /// Parses a pseudonym.
    ///
    /// # Errors
    ///
    /// [`DomainError::BadSubject`] unless it is 64 lowercase hex characters.
    pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        let ok = value.len() == Self::LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DomainError::BadSubject);
        }
        Ok(Self(value))
    }

    /// The pseudonym from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The pseudonym as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubjectId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for SubjectId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<SubjectId> for String {
    fn from(id: SubjectId) -> String {
        id.0
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectId({}…)", self.0.get(..8).unwrap_or_default())
    }
}

/// A display name of an organisation or facility: 1 to [`MAX_NAME_LEN`] bytes, no control
/// characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Parses a name.
    ///
    /// # Errors
    ///
    /// [`DomainError`] when it is empty, too long, or holds a control character.
    pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        let field = "name";
        if value.trim().is_empty() {
            return Err(DomainError::Empty { field });
        }
        if value.len() > MAX_NAME_LEN {
            return Err(DomainError::TooLong {
                field,
                len: value.len(),
                max: MAX_NAME_LEN,
            });
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::ControlCharacter { field });
        }
        Ok(Self(value))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Closed vocabularies
// ---------------------------------------------------------------------------------------------

macro_rules! vocabulary {
    (
        $(#[$doc:meta])* $name:ident, $field:literal,
        { $( $(#[$vdoc:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            const EXPECTED: &'static str = concat!($($text, ", "),+);

            /// The value as it is written in the API, the log and Cedar.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(DomainError::UnknownValue {
                        field: $field,
                        value: cut(s),
                        expected: Self::EXPECTED.trim_end_matches(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::from_str(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary!(
    /// Why data is used (docs/api.md `purpose`). Variants follow docs/api.md's order.
    Purpose, "purpose",
    {
        /// Care of the patient.
        Treatment => "treatment",
        /// Emergency care; a kind of [`Purpose::Treatment`].
        Emergency => "emergency",
        /// Research.
        Research => "research",
        /// A clinical trial; a kind of [`Purpose::Research`].
        ClinicalTrial => "clinical_trial",
        /// Development of products and services.
        ProductDevelopment => "product_development",
        /// Insurance underwriting or claims.
        Insurance => "insurance",
        /// Health guidance (e.g. after a checkup).
        HealthGuidance => "health_guidance",
        /// Public health.
        PublicHealth => "public_health",
        /// Marketing.
        Marketing => "marketing",
        /// Running the facility that holds the records (management, quality, billing, audits):
        /// the purpose, besides treatment, of an information manager's view of their own
        /// facility's records. Added after the others, so it comes last.
        FacilityOperations => "facility_operations",
    }
);

impl Purpose {
    /// The purpose this is a kind of, if any.
    pub const fn parent(self) -> Option<Self> {
        match self {
            Self::Emergency => Some(Self::Treatment),
            Self::ClinicalTrial => Some(Self::Research),
            _ => None,
        }
    }

    /// Whether `self` is `ancestor` or a kind of it (so a consent or opt-out for `ancestor` covers
    /// a request for `self`).
    pub fn is_a(self, ancestor: Self) -> bool {
        let mut current = Some(self);
        while let Some(p) = current {
            if p == ancestor {
                return true;
            }
            current = p.parent();
        }
        false
    }
}

vocabulary!(
    /// De-identification level (docs/api.md `level`), from most to least identifiable; the variant
    /// order is that order, so `Identified > Pseudonymized > Anonymized > Statistical` under
    /// [`Level::identifiability`].
    Level, "level",
    {
        /// Data that names the patient.
        Identified => "IDENTIFIED",
        /// Data under a pseudonym that its holder could link back.
        Pseudonymized => "PSEUDONYMIZED",
        /// Data that cannot be linked back to the patient.
        Anonymized => "ANONYMIZED",
        /// Aggregates over a cohort.
        Statistical => "STATISTICAL",
    }
);

impl Level {
    /// How identifiable data at this level is: 3 for identified down to 0 for statistical.
    pub const fn identifiability(self) -> u8 {
        match self {
            Self::Identified => 3,
            Self::Pseudonymized => 2,
            Self::Anonymized => 1,
            Self::Statistical => 0,
        }
    }

    /// Whether a consent whose maximum level is `self` allows data at `requested`: it does when
    /// `requested` is no more identifiable than `self`.
    pub const fn allows(self, requested: Self) -> bool {
        requested.identifiability() <= self.identifiability()
    }
}

vocabulary!(
    /// The class of a recipient organisation (docs/api.md `recipient_class`).
    RecipientClass, "recipient class",
    {
        /// An AI vendor.
        AiVendor => "ai_vendor",
        /// A health-checkup centre (a facility).
        CheckupCenter => "checkup_center",
        /// A medical device maker.
        DeviceMaker => "device_maker",
        /// A hospital (a facility).
        Hospital => "hospital",
        /// A pharmaceutical company.
        Pharma => "pharma",
        /// A private insurer.
        PrivateInsurer => "private_insurer",
        /// A public body.
        PublicBody => "public_body",
        /// A university.
        University => "university",
    }
);

vocabulary!(
    /// The format of a facility, facility-group or decision event's public leaf (docs/design.md
    /// §3). An event without one has the first format. [`LeafHeader::V2`] leaves begin with
    /// `header 2`; a facility or group one says nothing about excluded patients (the first format
    /// gave their number), a decision one also gives the data category asked for.
    LeafHeader, "leaf header",
    {
        /// The second format: no patient count; decisions give their data category.
        V2 => "2",
    }
);

vocabulary!(
    /// What a request wants to do (docs/api.md `action`).
    Action, "action",
    {
        /// Break-glass view of a patient's records in an emergency (docs/design.md §5 rule 7).
        EmergencyView => "emergency_view",
        /// Release of aggregate statistics, or counting one patient in them.
        ExportStatistics => "export_statistics",
        /// Use of a patient's data for a purpose other than their care.
        SecondaryUse => "secondary_use",
        /// Clinical viewing of a patient's records.
        ViewRecord => "view_record",
    }
);

vocabulary!(
    /// The role of a clinician (docs/api.md `role`).
    ClinicianRole, "role",
    {
        /// A doctor.
        Doctor => "doctor",
        /// An information manager of a facility.
        InformationManager => "information_manager",
    }
);

vocabulary!(
    /// What a request decided (docs/api.md `decision`).
    Effect, "decision",
    {
        /// The request is allowed.
        Allow => "ALLOW",
        /// The request is denied.
        Deny => "DENY",
    }
);

vocabulary!(
    /// The type of a principal (docs/api.md `principal.type`).
    PrincipalType, "principal type",
    {
        /// A clinician of a facility.
        Clinician => "Clinician",
        /// An organisation.
        Organization => "Organization",
        /// A patient.
        Patient => "Patient",
    }
);

vocabulary!(
    /// A kind of data (see the module docs for the tree).
    DataCategory, "data category",
    {
        /// Allergies (`clinical`).
        Allergy => "allergy",
        /// Health-checkup data (`general`).
        Checkup => "checkup",
        /// Checkup questionnaires and interviews (`checkup`).
        CheckupQuestionnaire => "checkup_questionnaire",
        /// Checkup results (`checkup`).
        CheckupResult => "checkup_result",
        /// Insurance claims (`general`).
        Claims => "claims",
        /// Clinical records (`general`).
        Clinical => "clinical",
        /// Free-text clinical notes (`clinical`).
        ClinicalNote => "clinical_note",
        /// Diagnoses (`clinical`).
        Diagnosis => "diagnosis",
        /// Everything except genomic and mental-health data (the root of the general tree).
        General => "general",
        /// Genomic data (top level, must be named explicitly).
        Genomic => "genomic",
        /// Imaging (`clinical`).
        Imaging => "imaging",
        /// Laboratory results (`clinical`).
        LabResult => "lab_result",
        /// Data recorded by the patient or their devices (`general`).
        Lifelog => "lifelog",
        /// Medication and prescriptions (`clinical`).
        Medication => "medication",
        /// Mental-health data (top level, must be named explicitly).
        MentalHealth => "mental_health",
        /// Procedures and operations (`clinical`).
        Procedure => "procedure",
        /// Vital signs (`clinical`).
        VitalSign => "vital_sign",
    }
);

impl DataCategory {
    /// The category this is part of, if any.
    pub const fn parent(self) -> Option<Self> {
        match self {
            Self::Allergy
            | Self::ClinicalNote
            | Self::Diagnosis
            | Self::Imaging
            | Self::LabResult
            | Self::Medication
            | Self::Procedure
            | Self::VitalSign => Some(Self::Clinical),
            Self::CheckupQuestionnaire | Self::CheckupResult => Some(Self::Checkup),
            Self::Checkup | Self::Claims | Self::Clinical | Self::Lifelog => Some(Self::General),
            Self::General | Self::Genomic | Self::MentalHealth => None,
        }
    }

    /// Whether `self` is `ancestor` or part of it (so a consent for `ancestor` covers a request
    /// for `self`).
    pub fn is_a(self, ancestor: Self) -> bool {
        let mut current = Some(self);
        while let Some(c) = current {
            if c == ancestor {
                return true;
            }
            current = c.parent();
        }
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// An instant in UTC, serialised as RFC 3339 (e.g. `2026-04-01T09:30:00Z`), between the years
/// 1970 and 9999.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Parses an RFC 3339 timestamp (any offset; stored in UTC).
    ///
    /// # Errors
    ///
    /// [`DomainError::BadTimestamp`] naming `field` when it is not RFC 3339 or out of range.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::BadTimestamp {
            field,
            value: cut(value),
        };
        let parsed = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| bad())?;
        Self::from_offset(parsed).ok_or_else(bad)
    }

    /// The instant `millis` milliseconds after the Unix epoch, or `None` outside 1970–9999.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        let nanos = i128::from(millis).checked_mul(1_000_000)?;
        let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
        Self::from_offset(t)
    }

    /// The instant `seconds` seconds after the Unix epoch, or `None` outside 1970–9999.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        Self::from_unix_millis(seconds.checked_mul(1000)?)
    }

    /// The current time.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self::from_offset(now).unwrap_or(Self(OffsetDateTime::UNIX_EPOCH))
    }

    /// Milliseconds since the Unix epoch (truncated).
    pub fn unix_millis(self) -> i64 {
        let millis = self.0.unix_timestamp_nanos() / 1_000_000;
        // INVARIANT: years 1970..=9999 are far inside i64 milliseconds.
        i64::try_from(millis).unwrap_or(i64::MAX)
    }

    /// The RFC 3339 text of this instant in UTC.
    pub fn to_rfc3339(self) -> String {
        // INVARIANT: formatting fails only for years outside 0..=9999, which `from_offset` rules
        // out.
        self.0.format(&Rfc3339).unwrap_or_default()
    }

    /// The day (`YYYY-MM-DD`, UTC) of this instant, for coarse public dates.
    pub fn day(self) -> String {
        let d = self.0.date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    /// The instant in UTC, or `None` when UTC is outside 1970–9999. `to_offset` would panic on
    /// `9999-12-31T23:59:59-00:01` (year 10000 in UTC), so the conversion is checked.
    fn from_offset(t: OffsetDateTime) -> Option<Self> {
        let t = t.checked_to_offset(time::UtcOffset::UTC)?;
        (1970..=9999).contains(&t.year()).then_some(Self(t))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse("timestamp", &s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Principals and records
// ---------------------------------------------------------------------------------------------

/// Who asks (docs/api.md `principal`). Serialised as `{"type": "...", "id": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id")]
pub enum Principal {
    /// A clinician, acting for their facility.
    Clinician(ClinicianId),
    /// An organisation.
    Organization(OrgId),
    /// A patient, under their pseudonym.
    Patient(SubjectId),
}

impl Principal {
    /// Parses a principal from docs/api.md's `type` and `id`.
    ///
    /// # Errors
    ///
    /// [`DomainError`] naming `principal type` or the id field.
    pub fn parse(principal_type: &str, id: &str) -> Result<Self, DomainError> {
        Ok(match PrincipalType::from_str(principal_type)? {
            PrincipalType::Clinician => Self::Clinician(ClinicianId::new(id)?),
            PrincipalType::Organization => Self::Organization(OrgId::new(id)?),
            PrincipalType::Patient => Self::Patient(SubjectId::new(id)?),
        })
    }

    /// The principal's type.
    pub fn principal_type(&self) -> PrincipalType {
        match self {
            Self::Clinician(_) => PrincipalType::Clinician,
            Self::Organization(_) => PrincipalType::Organization,
            Self::Patient(_) => PrincipalType::Patient,
        }
    }
}

/// An organisation of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id.
    pub id: OrgId,
    /// Its display name.
    pub name: Name,
    /// Its recipient class.
    pub recipient_class: RecipientClass,
}

/// A facility of the directory, with its disclosure settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facility {
    /// Its id (also its organisation id).
    pub id: FacilityId,
    /// Its display name.
    pub name: Name,
    /// The facility group it belongs to, if any.
    pub group: Option<GroupId>,
    /// Departments whose records it does not share.
    pub excluded_departments: Vec<Department>,
    /// Patients whose records it does not share. Private: never in a public leaf.
    pub excluded_patients: Vec<SubjectId>,
    /// The recipient class it is registered under as an organisation with the same id
    /// (`hospital` or `checkup_center`). None in events logged before facilities were
    /// organisations: applying such an event registers no organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_class: Option<RecipientClass>,
    /// The format of the event's public leaf; none is the first format (see [`LeafHeader`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<LeafHeader>,
}

/// A facility group, whose disclosure settings apply to all its facilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilityGroup {
    /// Its id.
    pub id: GroupId,
    /// Departments whose records no member facility shares.
    pub excluded_departments: Vec<Department>,
    /// Patients whose records no member facility shares. Private: never in a public leaf.
    pub excluded_patients: Vec<SubjectId>,
    /// The format of the event's public leaf; none is the first format (see [`LeafHeader`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<LeafHeader>,
}

/// Something of the directory that can be deactivated, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "entity", content = "id", rename_all = "snake_case")]
pub enum Deactivation {
    /// A clinician: their requests are denied from then on.
    Clinician(ClinicianId),
    /// A facility: its clinicians' requests are denied, and so is its organisation (same id).
    Facility(FacilityId),
    /// An organisation: its requests, and requests on its behalf, are denied.
    Organization(OrgId),
}

/// A clinician of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clinician {
    /// Their id.
    pub id: ClinicianId,
    /// The facility they work for.
    pub facility: FacilityId,
    /// Their department in that facility.
    pub department: Department,
    /// Their role.
    pub role: ClinicianRole,
}

/// A patient's opt-in consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Its id.
    pub id: ConsentId,
    /// The patient.
    pub subject: SubjectId,
    /// The purposes it covers (each with its sub-purposes).
    pub purposes: Vec<Purpose>,
    /// The data categories it covers (each with its sub-categories).
    pub data_categories: Vec<DataCategory>,
    /// Organisations it names (for clinicians, their facility's id is matched).
    pub recipients: Vec<OrgId>,
    /// Recipient classes it names.
    pub recipient_classes: Vec<RecipientClass>,
    /// The most identifiable level it allows.
    pub max_level: Level,
    /// Start of validity (inclusive); none = from the grant.
    pub valid_from: Option<Timestamp>,
    /// End of validity (exclusive); none = open.
    pub valid_until: Option<Timestamp>,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// When it was revoked; always none in a grant (revocation is its own log entry).
    pub revoked_at: Option<Timestamp>,
}

impl Consent {
    /// Checks the caps and the shape: at least one purpose and category, at least one recipient or
    /// class, a non-empty validity period, not already revoked.
    ///
    /// # Errors
    ///
    /// The first [`DomainError`] found.
    pub fn check(&self) -> Result<(), DomainError> {
        check_list("purposes", self.purposes.len(), MAX_PURPOSES, true)?;
        check_list(
            "data_categories",
            self.data_categories.len(),
            MAX_CATEGORIES,
            true,
        )?;
        check_list("recipients", self.recipients.len(), MAX_RECIPIENTS, false)?;
        check_list(
            "recipient_classes",
            self.recipient_classes.len(),
            MAX_RECIPIENT_CLASSES,
            false,
        )?;
        if self.recipients.is_empty() && self.recipient_classes.is_empty() {
            return Err(DomainError::NoRecipients);
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until)
            && until <= from
        {
            return Err(DomainError::EmptyValidity);
        }
        if self.revoked_at.is_some() {
            return Err(DomainError::GrantedRevoked);
        }
        Ok(())
    }

    /// Whether the consent is in force at `now`: `valid_from <= now < valid_until` (half-open;
    /// a missing bound is open). Revocation is not part of this: revoked consents are removed from
    /// the state when the revocation is applied.
    pub fn in_force_at(&self, now: Timestamp) -> bool {
        self.valid_from.is_none_or(|from| from <= now)
            && self.valid_until.is_none_or(|until| now < until)
    }

    /// Whether this consent, in force at `now`, covers a use for `purpose` of `category` data at
    /// `level` by `recipient` (an organisation id, with its class when known).
    pub fn covers(
        &self,
        purpose: Purpose,
        category: DataCategory,
        level: Level,
        recipient: &OrgId,
        recipient_class: Option<RecipientClass>,
        now: Timestamp,
    ) -> bool {
        self.in_force_at(now)
            && self.max_level.allows(level)
            && self.purposes.iter().any(|p| purpose.is_a(*p))
            && self.data_categories.iter().any(|c| category.is_a(*c))
            && (self.recipients.contains(recipient)
                || recipient_class.is_some_and(|class| self.recipient_classes.contains(&class)))
    }
}

pub(crate) fn check_list(
    field: &'static str,
    len: usize,
    max: usize,
    required: bool,
) -> Result<(), DomainError> {
    if required && len == 0 {
        return Err(DomainError::EmptyList { field });
    }
    if len > max {
        return Err(DomainError::TooMany { field, len, max });
    }
    Ok(())
}
