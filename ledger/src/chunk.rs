//! Chunks: runs of consecutive leaves (or private bodies) written by one batch under one key.
//!
//! Writing one key per entry would cost one engine insert per entry; writing the batch as one
//! value makes a 1,000-entry batch a handful of inserts. A chunk never crosses a 256-entry
//! bundle boundary (c2sp.org/tlog-tiles entry bundles) and is cut at `MAX_CHUNK_BYTES`, so
//! values stay small and a bundle is a short range scan. A chunk's key is its first leaf index.
//!
//! Record format: `tag (u8) || length (u32 BE) || bytes`, tag 0 = present, tag 1 = redacted
//! (length 0). Only bodies are ever redacted.

use crate::{
    layout,
    store::{Store, StoreError},
};

/// Entries per bundle (c2sp.org/tlog-tiles).
pub(crate) const BUNDLE: u64 = 256;
/// A chunk is closed once it holds this many bytes.
pub(crate) const MAX_CHUNK_BYTES: usize = 256 << 10;

const PRESENT: u8 = 0;
const REDACTED: u8 = 1;
const HEADER: usize = 5;

/// A stored record: the bytes, or the fact that they were redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The record's bytes.
    Present(Vec<u8>),
    /// The record was deleted on a lawful request; its commitment stays in the leaf.
    Redacted,
}

/// A chunk failed to decode, or a record is missing: the store is damaged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored bytes are not a well-formed chunk.
    #[error("malformed chunk at index {start}")]
    Malformed {
        /// First index of the chunk.
        start: u64,
    },
    /// No chunk holds this index.
    #[error("no stored record for index {index}")]
    Missing {
        /// The missing index.
        index: u64,
    },
}

/// Splits `records` (starting at leaf index `first`) into chunks: `(first index, value)`.
pub(crate) fn build_chunks<'a, I>(first: u64, records: I) -> Vec<(u64, Vec<u8>)>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut current: Option<(u64, Vec<u8>)> = None;
    for (offset, record) in records.into_iter().enumerate() {
        let index = first + offset as u64;
        let cut = match &current {
            None => true,
            Some((_, bytes)) => index.is_multiple_of(BUNDLE) || bytes.len() >= MAX_CHUNK_BYTES,
        };
        if cut && let Some(done) = current.replace((index, Vec::new())) {
            out.push(done);
        }
        if let Some((_, bytes)) = current.as_mut() {
            push_record(bytes, Some(record));
        }
    }
    out.extend(current);
    out
}

fn push_record(out: &mut Vec<u8>, record: Option<&[u8]>) {
    match record {
        Some(bytes) => {
            out.push(PRESENT);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => {
            out.push(REDACTED);
            out.extend_from_slice(&0u32.to_be_bytes());
        }
    }
}

/// Decodes every record of a chunk.
pub(crate) fn decode(start: u64, mut bytes: &[u8]) -> Result<Vec<Record>, ChunkError> {
    let malformed = ChunkError::Malformed { start };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, rest) = bytes
            .split_at_checked(HEADER)
            .ok_or(ChunkError::Malformed { start })?;
        let (&tag, len) = header
            .split_first()
            .ok_or(ChunkError::Malformed { start })?;
        let len: [u8; 4] = len
            .try_into()
            .map_err(|_| ChunkError::Malformed { start })?;
        let len = u32::from_be_bytes(len) as usize;
        let (data, rest) = rest
            .split_at_checked(len)
            .ok_or(ChunkError::Malformed { start })?;
        match tag {
            PRESENT => out.push(Record::Present(data.to_vec())),
            REDACTED if len == 0 => out.push(Record::Redacted),
            _ => return Err(malformed),
        }
        bytes = rest;
    }
    Ok(out)
}

/// Reads the records `[start, start + count)` under `prefix`, failing if any is missing.
pub(crate) fn read(
    store: &dyn Store,
    prefix: u8,
    start: u64,
    count: u64,
) -> Result<Vec<Record>, ChunkError> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(4096));
    if count == 0 {
        return Ok(out);
    }
    let end = start.saturating_add(count);
    let first = store
        .last_at_or_before(&[prefix], &layout::indexed(prefix, start))?
        .ok_or(ChunkError::Missing { index: start })?;
    let mut chunks = vec![first];
    chunks.extend(store.scan(
        &layout::indexed(prefix, start.saturating_add(1)),
        &layout::indexed(prefix, end),
        usize::MAX,
    )?);
    let mut next = start;
    for (key, value) in chunks {
        let chunk_start = layout::index_of(&key).ok_or(ChunkError::Malformed { start: next })?;
        if chunk_start > next {
            return Err(ChunkError::Missing { index: next });
        }
        for (offset, record) in decode(chunk_start, &value)?.into_iter().enumerate() {
            let index = chunk_start + offset as u64;
            if index < next {
                continue;
            }
            if index >= end {
                break;
            }
            out.push(record);
            next = index + 1;
        }
    }
    if next < end {
        return Err(ChunkError::Missing { index: next });
    }
    Ok(out)
}

/// Replaces record `index` under `prefix` with a redaction marker. Returns whether it was
/// present before.
pub(crate) fn redact(store: &dyn Store, prefix: u8, index: u64) -> Result<bool, ChunkError> {
    let (key, value) = store
        .last_at_or_before(&[prefix], &layout::indexed(prefix, index))?
        .ok_or(ChunkError::Missing { index })?;
    let chunk_start = layout::index_of(&key).ok_or(ChunkError::Malformed { start: index })?;
    let records = decode(chunk_start, &value)?;
    let offset = usize::try_from(index - chunk_start).map_err(|_| ChunkError::Missing { index })?;
    let was_present = match records.get(offset) {
        None => return Err(ChunkError::Missing { index }),
        Some(record) => matches!(record, Record::Present(_)),
    };
    let mut bytes = Vec::with_capacity(value.len());
    for (i, record) in records.iter().enumerate() {
        match record {
            Record::Present(data) if i != offset => push_record(&mut bytes, Some(data)),
            _ => push_record(&mut bytes, None),
        }
    }
    store.put(&key, &bytes)?;
    Ok(was_present)
}
