//! Lawful erasure (APPI 35条) by crypto-shredding: how a patient's entries are sealed, erased,
//! and kept erased in every copy of the store.
//!
//! **Sealing.** Every entry about a patient (grants, revocations, opt-outs, decisions, erasures)
//! has its private body stored sealed under that patient's own key, held in the log's key vault
//! (`ledger::vault`), which lives beside the store and is not part of its backups. The state
//! keeps which key is the patient's (`sealkey/<pseudonym>`), written in the same batch as the
//! first entry sealed under it, and the vault's allocation high-water mark (`sealmeta/next`), so
//! that a restart never hands out a slot a committed entry uses. Directory and policy entries
//! name no patient and stay in the clear. The patient's consent-state record (`subj/…/s`: the
//! terms of their consents, their opt-outs) is sealed under the same key by the state adapters
//! (`seal_state`, `open_state`), so that the terms are not left readable in a copy either.
//!
//! **Erasing.** An erasure is an entry about the patient ([`Event::EraseEntries`]): checked and
//! sequenced like any write, against the retention period (refused with the first day it is
//! allowed, unless a regulator forces it), it drops the consents whose grants it erases and
//! moves the patient to a fresh key. Its batch also records, atomically, which erasure erased
//! each entry (`erased/<index>`, which auditors read to account for a missing body) and the work
//! left to do (`erase/pending/<index>`). Once the batch is durable, [`execute`] deletes the
//! erased bodies, re-seals the patient's other bodies under the new key, destroys the old key,
//! and only then clears the pending record; a restart resumes every pending erasure
//! ([`resume`]) before serving. With the old key gone, a copy of the store taken before the
//! erasure (a backup, a replica) can no longer read any body sealed under it.
//!
//! What an erasure keeps: leaves and commitments (so every proof stays valid), the patient's
//! listing of leaf indices, and the consent state that honours the patient's standing wishes
//! (opt-outs, revocations). Bodies stored in the clear before sealing existed are deleted from
//! the live store, but copies taken before cannot be reached by destroying a key.

use std::sync::Mutex;

use ledger::{
    entry::{Day, Leaf},
    hash::LeafIndex,
    log::Log,
    vault::KeyId,
};
use policy::{
    domain::{Purpose, SubjectId, Timestamp},
    event::Event,
    state::{self, KvError, KvRead, KvWrite},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    state_machine::{LogKv, TxKv, unavailable, unavailable_kv},
};

/// Prefix of the patient's current sealing key (16 bytes).
const SEAL_KEY: &[u8] = b"sealkey/";
/// The vault's allocation high-water mark (8 bytes, big-endian).
const SEAL_NEXT: &[u8] = b"sealmeta/next";
/// Prefix of the erasure work still to do after an erasure's batch, by its leaf index.
const PENDING: &[u8] = b"erase/pending/";
/// Prefix of the erasure that erased each entry, by the entry's leaf index.
const ERASED_BY: &[u8] = b"erased/";

/// The most entries one erasure of everything about a patient reaches: its batch records each
/// (`erased/<index>`), and the work after it deletes and re-seals them, so one request's work is
/// bounded. A patient with more is erased in parts (`leaf_indices`, oldest first).
pub const MAX_ERASED_AT_ONCE: usize = 100_000;

/// Erasures run one at a time: two of the same patient must re-seal in order.
static EXECUTING: Mutex<()> = Mutex::new(());

/// An erasure as the writer checks it at its position in the log.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) subject: SubjectId,
    /// Named entries, ascending and distinct; empty: every entry about the patient.
    pub(crate) indices: Vec<u64>,
    pub(crate) reason: String,
    pub(crate) force: bool,
    pub(crate) retention_days: u32,
}

/// The work an erasure's batch leaves for [`execute`].
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// The patient (pseudonym).
    subject: SubjectId,
    /// Every entry erased, ascending.
    erased: Vec<u64>,
    /// The key the patient's bodies were sealed under before (hex), to destroy.
    old_key: Option<String>,
}

impl Request {
    /// The erasure event, or why it is refused: no entries, an index not about the patient, or
    /// (unless forced) an entry still under the retention period.
    pub(crate) fn event(
        self,
        log: &Log,
        kv: &TxKv<'_, '_>,
        now: Timestamp,
    ) -> Result<Event, Error> {
        let Request {
            subject,
            indices,
            reason,
            force,
            retention_days,
        } = self;
        // The count first, from the patient's head: the listing is read only when bounded.
        let count = state::subject_head(kv, &subject)
            .map_err(unavailable)?
            .map_or(0, |head| head.count);
        if indices.is_empty() && count > MAX_ERASED_AT_ONCE as u64 {
            return Err(Error::FailedPrecondition(format!(
                "the patient has {count} entries, more than one erasure reaches \
                 ({MAX_ERASED_AT_ONCE}): erase them in parts with `leaf_indices`"
            )));
        }
        let listing =
            state::subject_entries_after(kv, &subject, None, usize::MAX).map_err(unavailable)?;
        let Some(&last) = listing.last() else {
            return Err(Error::FailedPrecondition(
                "there is no entry about the patient to erase".to_owned(),
            ));
        };
        let through = indices.is_empty().then_some(last);
        if let Some((position, index)) = indices
            .iter()
            .enumerate()
            .find(|(_, i)| listing.binary_search(i).is_err())
        {
            return Err(Error::Rejected(format!(
                "`leaf_indices[{position}]` ({index}) is not an entry about this patient"
            )));
        }
        let newest = indices.last().copied().unwrap_or(last);
        let today = day_of(now)?;
        let until = retained_until(log, newest, today, retention_days)?;
        if today < until && !force {
            return Err(Error::FailedPrecondition(format!(
                "entries about the patient are kept for {retention_days} days (APPI 29条 \
                 provision records): the newest one named can be erased from {until} on, or now \
                 by a regulator with `force`"
            )));
        }
        let (dropped_consents, state_after) =
            state::erasure_effect(kv, &subject, (through, &indices)).map_err(unavailable)?;
        Ok(Event::EraseEntries {
            subject,
            through,
            indices,
            reason,
            forced: force && today < until,
            time: now,
            dropped_consents,
            state_after: Box::new(state_after),
        })
    }
}

/// The day of `now`, as leaves date entries.
fn day_of(now: Timestamp) -> Result<Day, Error> {
    Day::from_unix_seconds(now.unix_millis().div_euclid(1000))
        .map_err(|_| Error::Internal("bad entry day"))
}

/// The first day entry `index` may be erased without force: its day plus the retention period.
/// An entry of a batch not yet durable is today's.
fn retained_until(log: &Log, index: u64, today: Day, days: u32) -> Result<Day, Error> {
    let day = match log.leaves(LeafIndex(index), 1) {
        Ok(leaves) => match leaves.first().map(|bytes| Leaf::decode(bytes)) {
            Some(Ok(leaf)) => leaf.day,
            _ => return Err(Error::Internal("a stored leaf does not decode")),
        },
        Err(_) if index >= log.size().get() => today,
        Err(err) => return Err(Error::Unavailable(Box::new(err))),
    };
    Day::from_unix_seconds(day.to_unix_seconds() + i64::from(days) * 86_400)
        .map_err(|_| Error::Internal("the retention period ends after 9999"))
}

/// The key entry about `subject` is sealed under — and the patient's consent-state record with
/// it —, chosen before the event is applied: the patient's key, or a fresh one for their first
/// entry, for an erasure, or when theirs is gone (a store restored from a copy taken before an
/// erasure). Returns the key (none when the log has no vault) and, for an erasure, the key it
/// replaces.
pub(crate) fn choose_key(
    log: &Log,
    kv: &mut TxKv<'_, '_>,
    subject: &SubjectId,
    erasure: bool,
) -> Result<(Option<KeyId>, Option<KeyId>), Error> {
    let Some(vault) = log.vault() else {
        return Ok((None, None));
    };
    let vault_failed = |err: ledger::vault::VaultError| Error::Unavailable(Box::new(err));
    let key_name = seal_key_name(subject);
    let current = kv
        .get(&key_name)
        .map_err(unavailable_kv)?
        .as_deref()
        .and_then(KeyId::from_slice);
    if !erasure
        && let Some(id) = current
        && vault.key(id).map_err(vault_failed)?.is_some()
    {
        return Ok((Some(id), None));
    }
    let id = vault.allocate().map_err(vault_failed)?;
    kv.put(&key_name, &id.to_bytes()).map_err(unavailable_kv)?;
    kv.put(SEAL_NEXT, &(id.slot() + 1).to_be_bytes())
        .map_err(unavailable_kv)?;
    Ok((Some(id), current.filter(|_| erasure)))
}

/// Records, with erasure `event` at `index` (applied), which erasure erased each entry and the
/// work left to do once the batch is durable.
pub(crate) fn record_erasure(
    kv: &mut TxKv<'_, '_>,
    event: &Event,
    index: u64,
    old_key: Option<KeyId>,
) -> Result<(), Error> {
    let Event::EraseEntries {
        subject,
        through,
        indices,
        ..
    } = event
    else {
        return Ok(());
    };
    // Every entry erased: the named ones, or the whole listing up to `through` (which now ends
    // with this erasure itself).
    let erased: Vec<u64> = match through {
        Some(through) => state::subject_entries_after(&*kv, subject, None, usize::MAX)
            .map_err(unavailable)?
            .into_iter()
            .filter(|i| i <= through)
            .collect(),
        None => indices.clone(),
    };
    for i in &erased {
        kv.put(&indexed(ERASED_BY, *i), &index.to_be_bytes())
            .map_err(unavailable_kv)?;
    }
    let pending = Pending {
        subject: subject.clone(),
        erased,
        old_key: old_key.map(|k| hex::encode(k.to_bytes())),
    };
    let bytes = serde_json::to_vec(&pending).map_err(|_| Error::Internal("pending erasure"))?;
    kv.put(&indexed(PENDING, index), &bytes)
        .map_err(unavailable_kv)
}

/// The patient whose consent-state record (`subj/<pseudonym>/s`) state key `key` is.
fn state_record_subject(key: &[u8]) -> Option<&[u8]> {
    let pseudonym = key.strip_prefix(b"subj/")?.strip_suffix(b"/s")?;
    (!pseudonym.is_empty() && !pseudonym.contains(&b'/')).then_some(pseudonym)
}

/// The state key of the sealing key of the patient `pseudonym`.
fn seal_key_name_of(pseudonym: &[u8]) -> Vec<u8> {
    let mut key = SEAL_KEY.to_vec();
    key.extend_from_slice(pseudonym);
    key
}

/// `value` of state key `key` as it is to be stored: a patient's consent-state record sealed
/// under the patient's current key (`current` reads a state key), so that destroying the key
/// makes the record unreadable in every copy of the store too; anything else, or a patient with
/// no usable key (none yet; a directory change naming them), as it is.
pub(crate) fn seal_state(
    log: &Log,
    current: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, KvError>,
    key: &[u8],
    value: &[u8],
) -> Result<Option<Vec<u8>>, KvError> {
    let (Some(pseudonym), Some(vault)) = (state_record_subject(key), log.vault()) else {
        return Ok(None);
    };
    let Some(id) = current(&seal_key_name_of(pseudonym))?
        .as_deref()
        .and_then(KeyId::from_slice)
    else {
        return Ok(None);
    };
    let Some(body_key) = vault.key(id).map_err(KvError::new)? else {
        return Ok(None);
    };
    let mut sealed = vec![SEALED_STATE];
    sealed.extend(ledger::vault::seal_record(
        &body_key,
        id,
        key,
        value,
        &mut rand::thread_rng(),
    ));
    Ok(Some(sealed))
}

/// A stored state value as readers see it: a sealed consent-state record opened. One sealed
/// under a destroyed key (a store restored from a copy taken before the patient's erasure)
/// reads as no consents and an opt-out of every purpose, so that nothing the erasure ended
/// comes back and nothing it held (an exclusion, an opt-out) is lost: the patient's data is
/// refused for every use until the patient's opt-outs are withdrawn anew.
pub(crate) fn open_state(log: &Log, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, KvError> {
    // Only consent-state records are ever sealed: any other value (a raw hash, a page of
    // indices) is stored as it is, whatever its first byte.
    if state_record_subject(key).is_none() {
        return Ok(value);
    }
    let Some((&SEALED_STATE, sealed)) = value.split_first() else {
        return Ok(value);
    };
    let vault = log
        .vault()
        .ok_or_else(|| KvError::new(SealedStateError("the log has no key vault")))?;
    let id = ledger::vault::sealed_key_id(sealed)
        .ok_or_else(|| KvError::new(SealedStateError("a sealed state record is malformed")))?;
    match vault.key(id).map_err(KvError::new)? {
        Some(body_key) => ledger::vault::open_record(&body_key, key, sealed).map_err(KvError::new),
        // Nothing the record held can be known, exclusions included: refuse every purpose.
        None => Ok(state::encode_subject_state(&state::SubjectState {
            opt_outs: Purpose::ALL.to_vec(),
            ..state::SubjectState::default()
        })),
    }
}

/// The first byte of a sealed consent-state record (a record in the clear is JSON: `{`).
const SEALED_STATE: u8 = 0x01;

/// A sealed state record that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SealedStateError(&'static str);

/// The state key of a patient's sealing key.
pub(crate) fn seal_key_name(subject: &SubjectId) -> Vec<u8> {
    seal_key_name_of(subject.as_str().as_bytes())
}

fn indexed(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Raises the vault's allocation floor to the state's high-water mark: call once the log is
/// open and its vault set, before the first batch.
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read; `INTERNAL` when the mark is corrupt.
pub fn restore_floor(log: &Log) -> Result<(), Error> {
    let Some(vault) = log.vault() else {
        return Ok(());
    };
    if let Some(bytes) = log
        .state_get(SEAL_NEXT)
        .map_err(|e| Error::Unavailable(Box::new(e)))?
    {
        let next: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Internal("the vault's high-water mark is corrupt"))?;
        let next = u64::from_be_bytes(next);
        if vault.slots() < next {
            // An older copy of the vault, or a damaged one: the keys of the newest patients are
            // missing, and their bodies would read as erased. Refuse rather than pretend.
            return Err(Error::FailedPrecondition(format!(
                "the key vault holds {} key slots, but the store has handed out {next}: it is \
                 an older copy or damaged; restore the vault that belongs to this store",
                vault.slots()
            )));
        }
        vault.set_floor(next);
    }
    Ok(())
}

/// How many vault slots the log has handed out (its high-water mark; 0 when none).
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read; `INTERNAL` when the mark is corrupt.
pub fn handed_out(log: &Log) -> Result<u64, Error> {
    let Some(bytes) = log
        .state_get(SEAL_NEXT)
        .map_err(|e| Error::Unavailable(Box::new(e)))?
    else {
        return Ok(0);
    };
    <[u8; 8]>::try_from(bytes.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Internal("the vault's high-water mark is corrupt"))
}

/// Whether the state says keys were handed out (then a missing vault is damage, not a new log).
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read.
pub fn keys_allocated(log: &Log) -> Result<bool, Error> {
    Ok(log
        .state_get(SEAL_NEXT)
        .map_err(|e| Error::Unavailable(Box::new(e)))?
        .is_some())
}

/// The erasure entry that erased entry `index`, if one did.
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read.
pub fn erased_by(log: &Log, index: u64) -> Result<Option<u64>, Error> {
    let value = log
        .state_get(&indexed(ERASED_BY, index))
        .map_err(|e| Error::Unavailable(Box::new(e)))?;
    Ok(value
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes))
}

/// Carries out the erasure logged at `index` once its batch is durable: deletes the erased
/// bodies, re-seals the patient's other bodies under the patient's current key, destroys the
/// old key, then clears the pending record. Returns how many entries the erasure named; does
/// nothing (and returns 0) when no work is pending for `index`. Idempotent: a crash anywhere
/// leaves the record, and running it again finishes the work.
///
/// # Errors
///
/// `UNAVAILABLE` when the store or the vault fails (the record stays, so a restart resumes it).
pub fn execute(log: &Log, index: u64) -> Result<u64, Error> {
    let _one_at_a_time = EXECUTING.lock().unwrap_or_else(|e| e.into_inner());
    let store_failed = |e: ledger::log::ReadError| Error::Unavailable(Box::new(e));
    let key = indexed(PENDING, index);
    let Some(bytes) = log
        .state_get(&key)
        .map_err(|e| Error::Unavailable(Box::new(e)))?
    else {
        return Ok(0);
    };
    let pending: Pending =
        serde_json::from_slice(&bytes).map_err(|_| Error::Internal("a pending erasure is bad"))?;
    let erased: Vec<LeafIndex> = pending.erased.iter().map(|i| LeafIndex(*i)).collect();
    log.redact_bodies(&erased).map_err(store_failed)?;
    let kv = LogKv(log);
    let current = kv
        .get(&seal_key_name(&pending.subject))
        .map_err(unavailable_kv)?
        .as_deref()
        .and_then(KeyId::from_slice);
    // A current key already destroyed (a store restored from a copy taken mid-erasure, whose
    // key a later erasure destroyed): its bodies cannot be read, so there is nothing to keep.
    let current_usable = match (current, log.vault()) {
        (Some(id), Some(vault)) => vault
            .key(id)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .is_some(),
        _ => false,
    };
    if let Some(current) = current.filter(|_| current_usable) {
        let size = log.size().get();
        let keep: Vec<LeafIndex> =
            state::subject_entries_after(&kv, &pending.subject, None, usize::MAX)
                .map_err(unavailable)?
                .into_iter()
                .filter(|i| *i < size && pending.erased.binary_search(i).is_err())
                .map(LeafIndex)
                .collect();
        log.reseal_bodies(&keep, current).map_err(store_failed)?;
    }
    let old = pending
        .old_key
        .as_deref()
        .and_then(|hex| hex::decode(hex).ok())
        .and_then(|bytes| KeyId::from_slice(&bytes));
    if let (Some(old), Some(vault)) = (old, log.vault())
        && Some(old) != current
    {
        vault
            .shred(old)
            .map_err(|e| Error::Unavailable(Box::new(e)))?;
    }
    log.delete_bookkeeping(&key).map_err(store_failed)?;
    tracing::info!(
        index,
        erased = pending.erased.len(),
        "erasure carried out: bodies deleted, the old key destroyed"
    );
    Ok(pending.erased.len() as u64)
}

/// Finishes every erasure whose batch is durable but whose work a stop interrupted. Returns how
/// many it finished.
///
/// # Errors
///
/// As [`execute`].
pub fn resume(log: &Log) -> Result<usize, Error> {
    let mut end = PENDING.to_vec();
    end.push(0xff);
    let pending = log
        .state_range(PENDING, Some(&end), usize::MAX)
        .map_err(|e| Error::Unavailable(Box::new(e)))?;
    let size = log.size().get();
    let mut done = 0;
    for (key, _) in pending {
        let Some(index) = key
            .strip_prefix(PENDING)
            .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
            .map(u64::from_be_bytes)
        else {
            continue;
        };
        if index < size {
            execute(log, index)?;
            done += 1;
        }
    }
    if done > 0 {
        tracing::warn!(done, "resumed erasures a stop had interrupted");
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
