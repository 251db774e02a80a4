//! Reading proto3 JSON as grpcurl prints it (protobuf.dev "ProtoJSON Format"): fields by their
//! lowerCamelCase name or their proto name, 64-bit integers as decimal strings or numbers,
//! `bytes` as base64 (standard or URL-safe, padded or not), fields at their default value
//! missing. Shared by the receipt and history readers.
//!
//! This module only reads values; what a field must hold is its caller's business.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

/// A field by its JSON name or its proto name.
pub(crate) fn field<'a>(
    object: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}

/// A `uint64`: a canonical decimal string or a non-negative integer number; missing or null is
/// the default, 0. `None` when it is neither.
pub(crate) fn uint64(value: Option<&Value>) -> Option<u64> {
    match value {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => {
            let canonical = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            if !canonical {
                return None;
            }
            s.parse().ok()
        }
        Some(_) => None,
    }
}

/// A `bool`; missing or null is false.
#[cfg(feature = "replay")]
pub(crate) fn boolean(value: Option<&Value>) -> Option<bool> {
    match value {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    }
}

/// A `bytes` value: standard or URL-safe base64, padded or not.
pub(crate) fn bytes(value: &Value) -> Option<Vec<u8>> {
    let text = value.as_str()?;
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// A `bytes` field; missing or null is empty.
#[cfg(feature = "replay")]
pub(crate) fn bytes_field(value: Option<&Value>) -> Option<Vec<u8>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(v) => bytes(v),
    }
}

/// A `repeated bytes` field of at most `max` items; missing or null is empty.
#[cfg(feature = "replay")]
pub(crate) fn repeated_bytes(value: Option<&Value>, max: usize) -> Option<Vec<Vec<u8>>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) if items.len() <= max => items.iter().map(bytes).collect(),
        Some(_) => None,
    }
}
