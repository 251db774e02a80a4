//! The key-value store the state is kept in: the [`KvRead`], [`KvWrite`] and [`KvScan`] traits,
//! their [`BTreeMap`] implementation (a regulator's replay), and prefix scans.

use std::collections::BTreeMap;

/// A failure of the underlying key-value store.
#[derive(Debug, thiserror::Error)]
#[error("key-value store failed: {source}")]
pub struct KvError {
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl KvError {
    /// Wraps a store's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// Reads from a key-value map.
pub trait KvRead {
    /// The value under `key`, if any.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
}

/// Writes to a key-value map.
pub trait KvWrite: KvRead {
    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError>;

    /// Removes `key` (no error if it is absent).
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn delete(&mut self, key: &[u8]) -> Result<(), KvError>;
}

/// Key-value pairs, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Lists keys in a range, in key order.
pub trait KvScan: KvRead {
    /// Every `(key, value)` with `start <= key < end` (`end` `None`: no upper bound), in key
    /// order.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError>;

    /// The first `limit` pairs of [`KvScan::scan_range`]. Stores that can stop early override it.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn scan_range_limit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let mut pairs = self.scan_range(start, end)?;
        pairs.truncate(limit);
        Ok(pairs)
    }
}

impl KvRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
}

impl KvWrite for BTreeMap<Vec<u8>, Vec<u8>> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.remove(key);
        Ok(())
    }
}

impl KvScan for BTreeMap<Vec<u8>, Vec<u8>> {
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError> {
        use std::ops::Bound;
        let upper = match end {
            Some(end) if start >= end => return Ok(Vec::new()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(self
            .range((Bound::Included(start.to_vec()), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl<T: KvScan + ?Sized> KvScan for &T {
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError> {
        (**self).scan_range(start, end)
    }

    fn scan_range_limit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        (**self).scan_range_limit(start, end, limit)
    }
}

/// The smallest key greater than every key that starts with `prefix`, the end bound of
/// [`KvScan::scan_range`] for a prefix scan; `None` when there is none (an empty prefix, or one
/// of only `0xff` bytes: every key after `prefix` starts with it).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last.saturating_add(1));
            return Some(end);
        }
    }
    None
}

/// Every `(key, value)` whose key starts with `prefix`, in key order.
///
/// # Errors
///
/// [`KvError`] when the store fails.
pub fn scan_prefix(kv: &impl KvScan, prefix: &[u8]) -> Result<KvPairs, KvError> {
    kv.scan_range(prefix, prefix_end(prefix).as_deref())
}

impl<T: KvRead + ?Sized> KvRead for &T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
}

impl<T: KvRead + ?Sized> KvRead for &mut T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
}

impl<T: KvWrite + ?Sized> KvWrite for &mut T {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        (**self).put(key, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        (**self).delete(key)
    }
}
