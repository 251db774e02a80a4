//! Chunks: runs of consecutive leaves (or private bodies) written by one batch under one key.
//!
//! Writing one key per entry would cost one engine insert per entry; writing the batch as one
//! value makes a 1,000-entry batch a handful of inserts. A chunk never crosses a 256-entry
//! bundle boundary (c2sp.org/tlog-tiles entry bundles) and is cut at `MAX_CHUNK_BYTES`, so
//! values stay small and a bundle is a short range scan. A chunk's key is its first leaf index.
//!
//! Record format: `tag (u8) || length (u32 BE) || bytes`, tag 0 = present, tag 1 = redacted
//! (length 0), tag 2 = sealed (a private body encrypted under its patient's key, see
//! [`crate::vault`]). Only bodies are ever redacted or sealed.

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
const SEALED: u8 = 2;
const HEADER: usize = 5;

/// A stored record: the bytes, or the fact that they were redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The record's bytes.
    Present(Vec<u8>),
    /// The record was deleted on a lawful request; its commitment stays in the leaf.
    Redacted,
}

/// A record as stored: [`Record`]'s two states, or a body sealed under a patient's key that
/// only [`crate::log::Log`] opens (with its vault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Raw {
    /// The bytes, in the clear.
    Present(Vec<u8>),
    /// Deleted on a lawful request.
    Redacted,
    /// A sealed body (`crate::vault::seal_body`).
    Sealed(Vec<u8>),
}

/// A record to store: in the clear, or sealed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stored<'a> {
    /// The bytes, in the clear.
    Plain(&'a [u8]),
    /// A sealed body.
    Sealed(&'a [u8]),
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
    I: IntoIterator<Item = Stored<'a>>,
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
            push_record(bytes, stored(record));
        }
    }
    out.extend(current);
    out
}

fn stored(record: Stored<'_>) -> (u8, &[u8]) {
    match record {
        Stored::Plain(bytes) => (PRESENT, bytes),
        Stored::Sealed(bytes) => (SEALED, bytes),
    }
}

fn push_raw(out: &mut Vec<u8>, record: &Raw) {
    match record {
        Raw::Present(bytes) => push_record(out, (PRESENT, bytes)),
        Raw::Sealed(bytes) => push_record(out, (SEALED, bytes)),
        Raw::Redacted => push_record(out, (REDACTED, &[])),
    }
}

fn push_record(out: &mut Vec<u8>, (tag, bytes): (u8, &[u8])) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes every record of a chunk.
pub(crate) fn decode(start: u64, mut bytes: &[u8]) -> Result<Vec<Raw>, ChunkError> {
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
            PRESENT => out.push(Raw::Present(data.to_vec())),
            REDACTED if len == 0 => out.push(Raw::Redacted),
            SEALED => out.push(Raw::Sealed(data.to_vec())),
            _ => return Err(malformed),
        }
        bytes = rest;
    }
    Ok(out)
}

/// Reads the records `[start, start + count)` under `prefix`, failing if any is missing or
/// sealed (only bodies are sealed: read them with [`read_raw`]).
pub(crate) fn read(
    store: &dyn Store,
    prefix: u8,
    start: u64,
    count: u64,
) -> Result<Vec<Record>, ChunkError> {
    read_raw(store, prefix, start, count)?
        .into_iter()
        .enumerate()
        .map(|(offset, raw)| match raw {
            Raw::Present(bytes) => Ok(Record::Present(bytes)),
            Raw::Redacted => Ok(Record::Redacted),
            Raw::Sealed(_) => Err(ChunkError::Malformed {
                start: start + offset as u64,
            }),
        })
        .collect()
}

/// Reads the records `[start, start + count)` under `prefix` as stored, failing if any is
/// missing.
pub(crate) fn read_raw(
    store: &dyn Store,
    prefix: u8,
    start: u64,
    count: u64,
) -> Result<Vec<Raw>, ChunkError> {
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
/// there (in the clear or sealed) before.
pub(crate) fn redact(store: &dyn Store, prefix: u8, index: u64) -> Result<bool, ChunkError> {
    let mut was_there = false;
    replace(store, prefix, index, |record| {
        was_there = !matches!(record, Raw::Redacted);
        Some(Raw::Redacted)
    })?;
    Ok(was_there)
}

/// Rewrites, in the one chunk that holds `indices[0]`, every record of `indices` (ascending)
/// that the chunk holds, with what `change` makes of it (`None`: leave it), reading and writing
/// the chunk once. Returns how many of `indices` the chunk held (they are done) and how many
/// records changed.
pub(crate) fn rewrite_chunk<E: From<ChunkError>>(
    store: &dyn Store,
    prefix: u8,
    indices: &[u64],
    mut change: impl FnMut(u64, &Raw) -> Result<Option<Raw>, E>,
) -> Result<(usize, u64), E> {
    let Some(&first) = indices.first() else {
        return Ok((0, 0));
    };
    let (key, value) = store
        .last_at_or_before(&[prefix], &layout::indexed(prefix, first))
        .map_err(ChunkError::from)?
        .ok_or(ChunkError::Missing { index: first })?;
    let chunk_start = layout::index_of(&key).ok_or(ChunkError::Malformed { start: first })?;
    let mut records = decode(chunk_start, &value)?;
    let end = chunk_start + records.len() as u64;
    if first >= end {
        return Err(ChunkError::Missing { index: first }.into());
    }
    let held = indices.iter().take_while(|i| **i < end).count();
    let mut changed = 0;
    for &index in indices.iter().take(held) {
        let Some(slot) = usize::try_from(index - chunk_start)
            .ok()
            .and_then(|offset| records.get_mut(offset))
        else {
            return Err(ChunkError::Missing { index }.into());
        };
        if let Some(new) = change(index, slot)? {
            *slot = new;
            changed += 1;
        }
    }
    if changed > 0 {
        let mut bytes = Vec::with_capacity(value.len());
        for record in &records {
            push_raw(&mut bytes, record);
        }
        store.put(&key, &bytes).map_err(ChunkError::from)?;
    }
    Ok((held, changed))
}

/// Rewrites record `index` under `prefix` with what `change` makes of it (`None`: leave the
/// chunk as it is). Returns whether it was rewritten.
pub(crate) fn replace(
    store: &dyn Store,
    prefix: u8,
    index: u64,
    change: impl FnOnce(&Raw) -> Option<Raw>,
) -> Result<bool, ChunkError> {
    let (key, value) = store
        .last_at_or_before(&[prefix], &layout::indexed(prefix, index))?
        .ok_or(ChunkError::Missing { index })?;
    let chunk_start = layout::index_of(&key).ok_or(ChunkError::Malformed { start: index })?;
    let mut records = decode(chunk_start, &value)?;
    let offset = usize::try_from(index - chunk_start).map_err(|_| ChunkError::Missing { index })?;
    let slot = records
        .get_mut(offset)
        .ok_or(ChunkError::Missing { index })?;
    let Some(new) = change(slot) else {
        return Ok(false);
    };
    *slot = new;
    let mut bytes = Vec::with_capacity(value.len());
    for record in &records {
        push_raw(&mut bytes, record);
    }
    store.put(&key, &bytes)?;
    Ok(true)
}
