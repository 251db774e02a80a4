//! The public HTTP read path (c2sp.org/tlog-tiles): `/checkpoint`, `/tile/<L>/<N>[.p/<W>]`,
//! `/tile/entries/<N>[.p/<W>]` and `/vkey`. Everything served here is public by construction:
//! checkpoints, tree hashes and public leaves (which never name a patient).
//!
//! Tiles are read from the ledger's stored hashes (full tiles are stored as such, the rightmost
//! partial ones live in the log's frontier), never by rebuilding the tree. Full tiles and full
//! entry bundles never change and are served with a year-long, immutable cache lifetime; partial
//! ones and the checkpoint are short-lived. With witnesses configured (a quorum of at least one),
//! `/checkpoint` is the newest witnessed checkpoint (see `witness`), not the log's newest. A malformed path is a 400, a tile or bundle beyond
//! the current tree a 404, and neither has any other effect.

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use ledger::{
    hash::LeafIndex,
    tile::{BundleId, TileId, TilePath, encode_entry_bundle, parse_path},
};

use crate::service::Core;

/// Cache lifetime of immutable resources (full tiles and bundles).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache lifetime of partial tiles and bundles: they are superseded as the log grows.
pub const SHORT_LIVED: &str = "public, max-age=60";
/// The checkpoint must always be fetched fresh.
pub const NO_CACHE: &str = "no-cache";

/// The public routes over `core`'s log.
pub fn router(core: Core) -> Router {
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/vkey", get(vkey))
        .route("/tile/{*path}", get(tile))
        .with_state(core)
}

/// The log's newest checkpoint; with a witness quorum configured, the newest one that carries
/// the quorum's cosignatures as extra signature lines, or `503` until there is one.
async fn checkpoint(State(core): State<Core>) -> Response {
    let witnessed = core.witnessed();
    if witnessed.quorum() == 0 {
        return text(core.log().checkpoint().note().to_owned(), NO_CACHE);
    }
    match witnessed.newest() {
        Some(newest) => text(newest.note().to_owned(), NO_CACHE),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, NO_CACHE),
                (header::RETRY_AFTER, "1"),
            ],
            "no checkpoint has a quorum of witness cosignatures yet\n",
        )
            .into_response(),
    }
}

async fn vkey(State(core): State<Core>) -> Response {
    text(format!("{}\n", core.verifier_key()), IMMUTABLE)
}

async fn tile(State(core): State<Core>, Path(path): Path<String>) -> Response {
    let parsed = match parse_path(&format!("tile/{path}")) {
        Ok(parsed) => parsed,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    // Reads touch the store: keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || match parsed {
        TilePath::Hash(id) => hash_tile(&core, id),
        TilePath::Entries(id) => entry_bundle(&core, id),
    })
    .await;
    match result {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn hash_tile(core: &Core, id: TileId) -> Response {
    match core.log().tile(id.level, id.index, usize::from(id.width)) {
        Ok(Some(bytes)) => binary(bytes, cache_for(id.is_full())),
        Ok(None) => not_found(),
        Err(err) => unavailable(&err),
    }
}

fn entry_bundle(core: &Core, id: BundleId) -> Response {
    let log = core.log();
    let first = id.first_leaf();
    let size = log.size().get();
    if first
        .checked_add(u64::from(id.width))
        .is_none_or(|end| end > size)
    {
        return not_found();
    }
    let leaves = match log.leaves(LeafIndex(first), u64::from(id.width)) {
        Ok(leaves) => leaves,
        Err(err) => return unavailable(&err),
    };
    match encode_entry_bundle(&leaves) {
        Ok(bytes) => binary(bytes, cache_for(id.is_full())),
        Err(err) => unavailable(&err),
    }
}

fn cache_for(full: bool) -> &'static str {
    if full { IMMUTABLE } else { SHORT_LIVED }
}

fn text(body: String, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

fn binary(body: Vec<u8>, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from(body),
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn unavailable(err: &dyn std::error::Error) -> Response {
    tracing::error!(cause = %err, "public read failed");
    (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
}
