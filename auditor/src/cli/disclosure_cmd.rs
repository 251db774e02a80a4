//! `akashi-audit disclosure`: recomputes the public disclosure statistics from the log's public
//! leaves alone and compares them, cell by cell, with what the server publishes.
//!
//! It trusts nothing the server says about the numbers: it fetches `disclosure.json`, verifies
//! the checkpoint the statistics are pinned to with the log's key, reads every leaf of that tree
//! from the C2SP entry bundles, checks that the leaves make exactly that tree (the root is
//! recomputed from their hashes), and counts them with the same public rules
//! (`policy::disclosure`). It also checks that the log's newest checkpoint extends the pinned
//! one (a consistency proof from the hash tiles), so the statistics are not about a tree shown
//! to nobody else, and that each policy text served under a hash has that hash. Given witnesses
//! (`--witness`, `--witness-quorum`), the pinned checkpoint must also carry their cosignatures.

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::{
    checkpoint::SignedCheckpoint,
    entry::Leaf,
    hash::{Hash, hash_leaf},
    note::NoteVerifier,
    tile::{BundleId, TILE_WIDTH, decode_entry_bundle},
};
use policy::disclosure::{Document, FORMAT, Header, Tally, compare};
use serde::Serialize;

use super::http::{TileLog, consistency_proof};
use crate::compact::CompactRange;
use crate::exit::AuditExitCode;
use crate::quorum::WitnessPolicy;

/// The largest `disclosure.json` read, in bytes.
pub const MAX_DOCUMENT_SIZE: usize = 64 * 1024 * 1024;

/// The largest entry bundle read: 256 leaves of the largest size, with their length prefixes.
const MAX_BUNDLE_SIZE: usize = 256 * (ledger::entry::MAX_LEAF_SIZE + 2) + 1024;

/// What `disclosure` needs.
#[derive(Debug, Clone)]
pub struct DisclosureConfig {
    /// The log's verifier key.
    pub verifier: NoteVerifier,
    /// The server's public HTTP URL (`http://` or `https://host:port[/prefix]`).
    pub http: String,
    /// How to connect to an `https://` URL (its CA file; the public port asks for no client
    /// certificate).
    pub tls: super::tls::ClientTls,
    /// The witnesses whose cosignatures the pinned checkpoint must carry, and how many.
    pub witnesses: WitnessPolicy,
}

/// What `disclosure` found.
#[derive(Debug, Clone, Serialize)]
pub struct DisclosureReport {
    /// The tree size the statistics are pinned to.
    pub size: u64,
    /// The threshold the statistics were published with (and recomputed with).
    pub threshold: u64,
    /// Cells and facts that differ, in words; empty when everything matches.
    pub differences: Vec<String>,
    /// Table cells compared.
    pub cells: usize,
}

impl DisclosureReport {
    /// 0 when every number matches, 2 otherwise.
    pub fn exit_code(&self) -> AuditExitCode {
        if self.differences.is_empty() {
            AuditExitCode::Valid
        } else {
            AuditExitCode::Invalid
        }
    }
}

impl std::fmt::Display for DisclosureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.differences.is_empty() {
            writeln!(
                f,
                "every number matches: {} cells recomputed from the {} public leaves of the signed checkpoint (threshold {})",
                self.cells, self.size, self.threshold
            )
        } else {
            writeln!(
                f,
                "{} difference(s) between the published statistics and the {} public leaves of the signed checkpoint:",
                self.differences.len(),
                self.size
            )?;
            for difference in &self.differences {
                writeln!(f, "  - {difference}")?;
            }
            Ok(())
        }
    }
}

/// Recomputes and compares. Blocking (the tile client is synchronous). `progress` draws a
/// progress bar on stderr while the leaves are read.
///
/// # Errors
///
/// When the server cannot be reached, `disclosure.json` is not a statistics document, or a tile
/// or bundle cannot be fetched: the check could not run. A document that parses but disagrees
/// with the log is a report with differences, not an error.
pub fn disclosure(config: &DisclosureConfig, progress: bool) -> anyhow::Result<DisclosureReport> {
    let log = TileLog::with_ca(&config.http, config.tls.ca.as_deref())
        .context("while reading `--http`")?;
    let (status, bytes) = log
        .get_limited("disclosure.json", MAX_DOCUMENT_SIZE)
        .context("while fetching disclosure.json")?;
    anyhow::ensure!(status == 200, "disclosure.json: HTTP status {status}");
    let document: Document =
        serde_json::from_slice(&bytes).context("disclosure.json is not a statistics document")?;
    anyhow::ensure!(
        document.format == FORMAT,
        "disclosure.json has format `{}`, not `{FORMAT}`",
        document.format
    );
    let mut differences = Vec::new();
    let pinned = if config.witnesses.is_required() {
        match config
            .witnesses
            .check(&config.verifier, &document.checkpoint.note)
        {
            Ok(witnessed) => witnessed.signed().clone(),
            Err(err) => {
                differences.push(format!(
                    "the checkpoint the statistics are pinned to is not signed by the log and cosigned by the witnesses asked for: {err}"
                ));
                return Ok(report(&document, differences, 0));
            }
        }
    } else {
        match SignedCheckpoint::verify(&document.checkpoint.note, &config.verifier) {
            Ok(pinned) => pinned,
            Err(err) => {
                differences.push(format!(
                    "the checkpoint the statistics are pinned to does not verify with the log's key: {err}"
                ));
                return Ok(report(&document, differences, 0));
            }
        }
    };
    let checkpoint = pinned.checkpoint();
    let root_text = base64_root(&checkpoint.root);
    if checkpoint.size.get() != document.checkpoint.size
        || root_text != document.checkpoint.root_hash
        || checkpoint.origin != document.checkpoint.origin
    {
        differences.push(
            "the size, root or origin stated beside the checkpoint are not the signed ones"
                .to_owned(),
        );
    }
    differences.extend(extends_newest(&log, &pinned, &config.verifier)?);
    let size = checkpoint.size.get();
    let bar = if progress && size > 0 {
        let bar = ProgressBar::new(size);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} leaves {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut tally = Tally::new();
    let mut range = CompactRange::new();
    let mut index = 0u64;
    while index < size {
        let leaves = bundle(&log, index / u64::from(TILE_WIDTH), size)?;
        for bytes in leaves {
            range.push(hash_leaf(&bytes));
            let Ok(leaf) = Leaf::decode(&bytes) else {
                differences.push(format!("leaf {index} is not an akashi leaf"));
                index += 1;
                continue;
            };
            let day = leaf.day.to_string();
            let attributes = leaf.attribute_texts();
            let header = Header {
                kind: leaf.kind.as_str(),
                day: &day,
                attributes: &attributes,
            };
            tally
                .add(index, &header)
                .with_context(|| format!("while counting leaf {index}"))?;
            index += 1;
        }
        bar.set_position(index);
    }
    bar.finish_and_clear();
    if range.root() != checkpoint.root {
        differences.push(
            "the leaves served do not make the tree of the signed checkpoint: nothing counted from them can be trusted"
                .to_owned(),
        );
    }
    let threshold = document.statistics.threshold;
    let recomputed = tally
        .statistics(threshold)
        .map_err(|err| anyhow::anyhow!("{err}"))
        .context("while recomputing the statistics")?;
    differences.extend(
        compare(&document.statistics, &recomputed)
            .iter()
            .map(ToString::to_string),
    );
    for set in &recomputed.policy_sets {
        differences.extend(check_policy_text(&log, &set.hash)?);
    }
    let cells = recomputed.tables.iter().map(|t| t.rows.len()).sum();
    Ok(report(&document, differences, cells))
}

fn report(document: &Document, differences: Vec<String>, cells: usize) -> DisclosureReport {
    DisclosureReport {
        size: document.checkpoint.size,
        threshold: document.statistics.threshold,
        differences,
        cells,
    }
}

fn base64_root(root: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(root.as_bytes())
}

/// Checks that the log's newest checkpoint verifies and extends `pinned`.
fn extends_newest(
    log: &TileLog,
    pinned: &SignedCheckpoint,
    verifier: &NoteVerifier,
) -> anyhow::Result<Option<String>> {
    let note = log.checkpoint().context("while fetching the checkpoint")?;
    let Ok(newest) = SignedCheckpoint::verify(&note, verifier) else {
        return Ok(Some(
            "the log's newest checkpoint does not verify with the log's key".to_owned(),
        ));
    };
    let (old, new) = (pinned.checkpoint(), newest.checkpoint());
    if new.size < old.size {
        return Ok(Some(format!(
            "the log's newest checkpoint ({} leaves) is older than the one the statistics are pinned to ({} leaves)",
            new.size.get(),
            old.size.get()
        )));
    }
    if new.size == old.size {
        return Ok((new.root != old.root).then(|| {
            "the statistics are pinned to a checkpoint of the same size as the newest but another root: the log forked".to_owned()
        }));
    }
    if old.size.get() == 0 {
        return Ok(None);
    }
    let proof = consistency_proof(log, old.size, new.size)
        .context("while fetching tiles for a consistency proof")?;
    Ok(proof.verify(&old.root, &new.root).err().map(|_| {
        "the log's newest checkpoint is not consistent with the one the statistics are pinned to"
            .to_owned()
    }))
}

/// The leaves of entry bundle `n` that fall below `size`: the partial bundle when it is the
/// last, else (or when the partial one is gone) the full one, cut to size.
fn bundle(log: &TileLog, n: u64, size: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let first = n.saturating_mul(u64::from(TILE_WIDTH));
    let width = u16::try_from(size.saturating_sub(first).min(u64::from(TILE_WIDTH)))
        .context("bundle width")?;
    let mut attempts = Vec::new();
    if width < TILE_WIDTH {
        attempts.push(BundleId { index: n, width }.path());
    }
    attempts.push(
        BundleId {
            index: n,
            width: TILE_WIDTH,
        }
        .path(),
    );
    for path in &attempts {
        let (status, body) = log
            .get_limited(path, MAX_BUNDLE_SIZE)
            .with_context(|| format!("while fetching `{path}`"))?;
        if status == 404 {
            continue;
        }
        anyhow::ensure!(status == 200, "`{path}`: HTTP status {status}");
        let mut leaves = decode_entry_bundle(&body)
            .with_context(|| format!("`{path}` is not an entry bundle"))?;
        anyhow::ensure!(
            leaves.len() >= usize::from(width),
            "`{path}` holds {} leaves, fewer than {width}",
            leaves.len()
        );
        leaves.truncate(usize::from(width));
        return Ok(leaves.into_iter().map(<[u8]>::to_vec).collect());
    }
    anyhow::bail!("entry bundle {n} is not served")
}

/// Fetches the text served for policy set `hash` and checks its hash.
fn check_policy_text(log: &TileLog, hash: &str) -> anyhow::Result<Option<String>> {
    let path = format!("policy/{hash}");
    let (status, body) = log
        .get_limited(&path, policy::policy_set::MAX_POLICY_TEXT + 1024)
        .with_context(|| format!("while fetching `{path}`"))?;
    if status != 200 {
        return Ok(Some(format!(
            "the text of policy set {hash} is not served (HTTP status {status})"
        )));
    }
    let Ok(text) = String::from_utf8(body) else {
        return Ok(Some(format!(
            "the text served for policy set {hash} is not UTF-8 text"
        )));
    };
    let digest = policy::policy_set::hash_text(&text).to_hex();
    Ok((digest != hash)
        .then(|| format!("the text served for policy set {hash} has another hash ({digest})")))
}
