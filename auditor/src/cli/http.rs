//! Following a log over C2SP `tlog-tiles` HTTP (c2sp.org/tlog-tiles), knowing nothing but the
//! spec: `GET <prefix>/checkpoint`, and hash tiles `GET <prefix>/tile/<L>/<N>[.p/<W>]`, from which
//! [`TileNodes`] answers any complete subtree hash so that `ledger`'s proof builder can compute a
//! consistency proof locally. The proof is then verified against the two signed roots, which is
//! what authenticates the tiles.
//!
//! The HTTP client is deliberately tiny: blocking HTTP/1.1 `GET` over a `TcpStream`, one request
//! per connection, responses capped at [`MAX_RESPONSE_SIZE`]; `http://`, or `https://` over
//! rustls trusting the CA file given (`--ca`) or the system's bundle ([`super::tls`]). It does
//! not do redirects, proxies or keep-alive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned, pki_types::ServerName};

use ledger::tile::decode_tile;
use ledger::{
    hash::{Hash, TreeSize, hash_children},
    tile::{TILE_HEIGHT, TILE_WIDTH, TileId},
};

/// The largest response accepted, in bytes: a full-size checkpoint note plus headers.
pub const MAX_RESPONSE_SIZE: usize = ledger::note::MAX_NOTE_SIZE + 64 * 1024;

/// The most tiles kept while building one proof.
const MAX_CACHED_TILES: usize = 1024;

/// How long one request may wait on the network.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A `tlog-tiles` log at an `http://` or `https://host[:port][/prefix]` URL.
#[derive(Clone)]
pub struct TileLog {
    host: String,
    authority: String,
    prefix: String,
    /// For `https://`: the TLS client and the name the certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for TileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileLog")
            .field("host", &self.host)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl TileLog {
    /// Parses the log's URL prefix; an `https://` one trusts the system's CA bundle.
    ///
    /// # Errors
    ///
    /// As [`TileLog::with_ca`].
    pub fn new(url: &str) -> Result<Self, HttpError> {
        Self::with_ca(url, None)
    }

    /// Parses the log's URL prefix; an `https://` one trusts the CA file `ca` (PEM), or the
    /// system's bundle without one.
    ///
    /// # Errors
    ///
    /// [`HttpError::Url`] for anything but `http://` or `https://authority[/path]`;
    /// [`HttpError::Ca`] when the CA file in force cannot be used.
    pub fn with_ca(url: &str, ca: Option<&Path>) -> Result<Self, HttpError> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(HttpError::Url),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let valid = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !valid
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(HttpError::Url);
        }
        let host = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let tls = if https {
            // The name without the port (and an IPv6 literal without its brackets).
            let name = match authority.rsplit_once(':') {
                Some((name, port)) if !port.contains(']') => name,
                _ => authority,
            };
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(name.to_owned()).map_err(|_| HttpError::Url)?;
            let config =
                super::tls::client_config(ca).map_err(|e| HttpError::Ca(format!("{e:#}")))?;
            Some((config, name))
        } else {
            None
        };
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self {
            host,
            authority: authority.to_owned(),
            prefix,
            tls,
        })
    }

    /// The latest checkpoint note, `GET <prefix>/checkpoint`.
    ///
    /// # Errors
    ///
    /// [`HttpError`] when the request fails, the status is not 200 or the body is not UTF-8.
    pub fn checkpoint(&self) -> Result<String, HttpError> {
        let body = self.get_ok("checkpoint")?;
        String::from_utf8(body).map_err(|_| HttpError::NotText)
    }

    /// `GET <prefix>/<path>`: the status and body, of at most [`MAX_RESPONSE_SIZE`] bytes.
    ///
    /// # Errors
    ///
    /// [`HttpError`] when the exchange fails or the response is malformed or too large.
    pub fn get(&self, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
        self.get_limited(path, MAX_RESPONSE_SIZE)
    }

    /// `GET <prefix>/<path>`: the status and body, refusing a response (headers included) of
    /// more than `max` bytes.
    ///
    /// # Errors
    ///
    /// [`HttpError`] when the exchange fails or the response is malformed or too large.
    pub fn get_limited(&self, path: &str, max: usize) -> Result<(u16, Vec<u8>), HttpError> {
        let stream = TcpStream::connect(&self.host).map_err(HttpError::Io)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(HttpError::Io)?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .map_err(HttpError::Io)?;
        let request = format!(
            "GET {}/{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: akashi-audit\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.prefix, self.authority
        );
        let (response, ended) = match &self.tls {
            None => exchange(stream, request.as_bytes(), max)?,
            Some((config, name)) => {
                let connection = ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| HttpError::Io(std::io::Error::other(e)))?;
                exchange(
                    StreamOwned::new(connection, stream),
                    request.as_bytes(),
                    max,
                )?
            }
        };
        if response.len() > max {
            return Err(HttpError::TooLarge { max });
        }
        parse_response(&response, ended)
    }

    fn get_ok(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        match self.get(path)? {
            (200, body) => Ok(body),
            (status, _) => Err(HttpError::Status {
                path: path.to_owned(),
                status,
            }),
        }
    }

    /// The hashes of `tile`; when a partial tile is gone (the tile has grown since), the full
    /// tile, cut to the width asked for.
    fn tile(&self, tile: TileId) -> Result<Vec<Hash>, HttpError> {
        let (status, body) = self.get(&tile.path())?;
        let (status, body, width) = if status == 404 && !tile.is_full() {
            let full = TileId::full(tile.level, tile.index);
            let (status, body) = self.get(&full.path())?;
            (status, body, TILE_WIDTH)
        } else {
            (status, body, tile.width)
        };
        if status != 200 {
            return Err(HttpError::Status {
                path: tile.path(),
                status,
            });
        }
        let mut hashes =
            decode_tile(&body, width).map_err(|_| HttpError::BadTile { path: tile.path() })?;
        hashes.truncate(usize::from(tile.width));
        Ok(hashes)
    }
}

/// Subtree hashes of the tree of `size` leaves, read from hash tiles on demand: a node at tree
/// level `8 * L + r` is the root of `2^r` consecutive hashes of one tile at tile level `L`.
#[derive(Debug)]
pub struct TileNodes<'a> {
    log: &'a TileLog,
    size: TreeSize,
    cache: RefCell<HashMap<TileId, Vec<Hash>>>,
}

impl<'a> TileNodes<'a> {
    /// Nodes of the tree of `size` leaves of `log`.
    pub fn new(log: &'a TileLog, size: TreeSize) -> Self {
        Self {
            log,
            size,
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn tile_hashes(&self, tile: TileId) -> Result<Vec<Hash>, HttpError> {
        if let Some(hashes) = self.cache.borrow().get(&tile) {
            return Ok(hashes.clone());
        }
        let hashes = self.log.tile(tile)?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() < MAX_CACHED_TILES {
            cache.insert(tile, hashes.clone());
        }
        Ok(hashes)
    }
}

impl ledger::proof::NodeSource for TileNodes<'_> {
    type Error = HttpError;

    fn node(&self, level: u8, index: u64) -> Result<Hash, HttpError> {
        let outside = || HttpError::NodeOutsideTree { level, index };
        let tile_level = level / TILE_HEIGHT;
        let rest = u32::from(level % TILE_HEIGHT);
        let width = u64::from(TILE_WIDTH);
        // The node covers `count` hashes of tile level `tile_level`, starting at `first`.
        let count = 1u64 << rest;
        let first = index.checked_mul(count).ok_or_else(outside)?;
        let hashes_at_level = self
            .size
            .get()
            .checked_shr(u32::from(tile_level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0);
        let end = first.checked_add(count).ok_or_else(outside)?;
        if end > hashes_at_level {
            return Err(outside());
        }
        let tile_index = first / width;
        let tile_width = (hashes_at_level - tile_index * width).min(width);
        let tile = TileId::new(
            tile_level,
            tile_index,
            u16::try_from(tile_width).unwrap_or(256),
        )
        .map_err(|_| outside())?;
        let hashes = self.tile_hashes(tile)?;
        let offset = usize::try_from(first % width).map_err(|_| outside())?;
        let count = usize::try_from(count).map_err(|_| outside())?;
        let slice = hashes
            .get(offset..offset + count)
            .ok_or(HttpError::BadTile { path: tile.path() })?;
        Ok(subtree(slice))
    }
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves, computed from
/// the log's tiles for size `new`. It proves nothing until verified against the two signed roots.
///
/// # Errors
///
/// [`HttpError`] when a tile cannot be fetched, or the sizes are not a valid pair.
pub fn consistency_proof(
    log: &TileLog,
    old: TreeSize,
    new: TreeSize,
) -> Result<ledger::proof::ConsistencyProof, HttpError> {
    let nodes = TileNodes::new(log, new);
    ledger::proof::prove_consistency(&nodes, old, new).map_err(|err| match err {
        ledger::proof::ProveError::Source(err) => err,
        _ => HttpError::BadSizes {
            old: old.get(),
            new: new.get(),
        },
    })
}

/// Why an HTTP exchange with the log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A malformed tile.
    #[error("`{path}` is not a valid tile")]
    BadTile {
        /// The tile path.
        path: String,
    },
    /// The sizes do not make a consistency proof.
    #[error("no consistency proof from size {old} to size {new}")]
    BadSizes {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// The network failed.
    #[error("http request failed: {0}")]
    Io(#[source] std::io::Error),
    /// The response is not HTTP/1.x.
    #[error("malformed http response")]
    Malformed,
    /// A TLS connection closed without `close_notify` before a body with neither a length nor
    /// chunked framing: the body may have been cut short on the way.
    #[error("the TLS connection ended without close_notify: the response may be truncated")]
    Truncated,
    /// A node that is not complete in the tree was needed.
    #[error("node {index} at level {level} is not in the tree")]
    NodeOutsideTree {
        /// Tree level.
        level: u8,
        /// Index at that level.
        index: u64,
    },
    /// The checkpoint is not UTF-8 text.
    #[error("checkpoint is not text")]
    NotText,
    /// A status other than 200.
    #[error("GET `{path}` answered http status {status}")]
    Status {
        /// The path.
        path: String,
        /// The status.
        status: u16,
    },
    /// The response is larger than the cap.
    #[error("http response is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// The URL is not `http://` or `https://authority[/path]`.
    #[error("log url must be `http://` or `https://host[:port][/prefix]`")]
    Url,
    /// The CA file for an `https://` URL cannot be used.
    #[error("{0}")]
    Ca(String),
}

/// Sends `request` over `stream` and reads the response to the end of the connection, at most
/// `max + 1` bytes (so that the caller can tell a response over the cap), and whether the
/// connection ended cleanly. A TLS peer that closes without a `close_notify` (many servers do)
/// leaves what was read, marked unclean: [`parse_response`] then accepts it only if its framing
/// shows it whole.
fn exchange<S: Read + Write>(
    mut stream: S,
    request: &[u8],
    max: usize,
) -> Result<(Vec<u8>, bool), HttpError> {
    stream.write_all(request).map_err(HttpError::Io)?;
    stream.flush().map_err(HttpError::Io)?;
    let mut response = Vec::new();
    match stream.take(max as u64 + 1).read_to_end(&mut response) {
        Ok(_) => Ok((response, true)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok((response, false)),
        Err(e) => Err(HttpError::Io(e)),
    }
}

/// The root of a perfect subtree given its bottom hashes (a power-of-two count).
fn subtree(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => hash_children(left, right),
                [single] => *single,
                _ => Hash::default(),
            })
            .collect();
    }
    level.first().copied().unwrap_or_default()
}

/// Splits a raw HTTP/1.x response into status and body (with `Content-Length`, chunked transfer
/// coding, or the body running to the end of the connection, which must then have `ended`
/// cleanly).
fn parse_response(response: &[u8], ended: bool) -> Result<(u16, Vec<u8>), HttpError> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed)?;
    let (head, body) = response.split_at(split);
    let body = body.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| HttpError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
        return Err(HttpError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed);
    }
    let status: u16 = status.parse().map_err(|_| HttpError::Malformed)?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| HttpError::Malformed)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        body.get(..length).ok_or(HttpError::Malformed)?.to_vec()
    } else if ended {
        body.to_vec()
    } else {
        return Err(HttpError::Truncated);
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpError::Malformed)?;
        let (line, after) = rest.split_at(line_end);
        let line = std::str::from_utf8(line).map_err(|_| HttpError::Malformed)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed)?;
        let after = after.get(2..).ok_or(HttpError::Malformed)?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or(HttpError::Malformed)?;
        out.extend_from_slice(chunk);
        rest = after.get(size + 2..).ok_or(HttpError::Malformed)?;
    }
}

#[cfg(test)]
mod tests;
