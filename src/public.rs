//! The public HTTP read path (c2sp.org/tlog-tiles): `/checkpoint`, `/tile/<L>/<N>[.p/<W>]`,
//! `/tile/entries/<N>[.p/<W>]` and `/vkey`; and the public disclosure platform built on it:
//! `/` and `/disclosure` (the page, `?lang=ja|en`, `?month=YYYY-MM`), `/disclosure.json`,
//! `/disclosure/<table>.csv` and `/policy/<hash>` (the text of a policy set that was in force).
//! Everything served here is public by construction: checkpoints, tree hashes, public leaves
//! (which never name a patient), counts made from them, and policy texts.
//!
//! Tiles are read from the ledger's stored hashes (full tiles are stored as such, the rightmost
//! partial ones live in the log's frontier), never by rebuilding the tree. Full tiles and full
//! entry bundles never change and are served with a year-long, immutable cache lifetime; partial
//! ones and the checkpoint are short-lived. With witnesses configured (a quorum of at least one),
//! `/checkpoint` is the newest witnessed checkpoint (see `witness`), not the log's newest. A malformed path is a 400, a tile or bundle beyond
//! the current tree a 404, and neither has any other effect.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use ledger::{
    hash::LeafIndex,
    tile::{BundleId, TileId, TilePath, encode_entry_bundle, parse_path},
};

use crate::disclosure::{Disclosure, Lang, Snapshot};
use crate::service::Core;

/// Cache lifetime of immutable resources (full tiles and bundles).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache lifetime of partial tiles and bundles: they are superseded as the log grows.
pub const SHORT_LIVED: &str = "public, max-age=60";
/// The checkpoint must always be fetched fresh.
pub const NO_CACHE: &str = "no-cache";

/// Cache lifetime of the disclosure page and its data: a statement as of one checkpoint, which
/// a newer one supersedes.
pub const DISCLOSURE_CACHE: &str = "public, max-age=10";

/// The public routes over `core`'s log, with its disclosure statistics.
pub fn router(core: Core, disclosure: Arc<Disclosure>) -> Router {
    let tiles = Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/vkey", get(vkey))
        .route("/tile/{*path}", get(tile))
        .with_state(core);
    let pages = Router::new()
        .route("/", get(page))
        .route("/disclosure", get(page))
        .route("/disclosure.json", get(json))
        .route("/disclosure/{file}", get(csv))
        .route("/policy/{hash}", get(policy_text))
        .with_state(disclosure);
    tiles.merge(pages)
}

/// The log's newest checkpoint; with a witness quorum configured, the newest one that carries
/// the quorum's cosignatures as extra signature lines, or `503` until there is one.
async fn checkpoint(State(core): State<Core>) -> Response {
    let witnessed = core.witnessed();
    if witnessed.quorum() == 0 {
        return text_response(core.log().checkpoint().note().to_owned(), NO_CACHE);
    }
    match witnessed.newest() {
        Some(newest) => text_response(newest.note().to_owned(), NO_CACHE),
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
    text_response(format!("{}\n", core.verifier_key()), IMMUTABLE)
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

/// The query of the disclosure page: `lang` and `month`; other keys are ignored. Both values
/// are plain ASCII, so nothing is percent-decoded (an encoded value is refused as malformed).
#[derive(Debug, Default)]
struct PageQuery {
    lang: Option<String>,
    month: Option<String>,
}

impl PageQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut out = Self::default();
        for pair in query.unwrap_or("").split('&').take(16) {
            match pair.split_once('=') {
                Some(("lang", value)) => out.lang = Some(value.to_owned()),
                Some(("month", value)) => out.month = Some(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

async fn page(
    State(disclosure): State<Arc<Disclosure>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = PageQuery::parse(query.as_deref());
    let lang = match query.lang.as_deref() {
        Some(text) => match Lang::parse(text) {
            Some(lang) => lang,
            None => {
                return (StatusCode::BAD_REQUEST, "`lang` must be `ja` or `en`\n").into_response();
            }
        },
        None => headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map_or(Lang::Ja, Lang::negotiate),
    };
    if let Some(month) = &query.month
        && !is_month(month)
    {
        return (StatusCode::BAD_REQUEST, "`month` must be `YYYY-MM`\n").into_response();
    }
    let snapshot = match current(disclosure).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let tag = format!(
        "\"{}-{}-{}\"",
        snapshot.size(),
        lang.tag(),
        query.month.as_deref().unwrap_or("latest")
    );
    if not_modified(&headers, &tag) {
        return not_modified_response(&tag);
    }
    let Some(body) = snapshot.page(lang, query.month.as_deref()) else {
        return (StatusCode::NOT_FOUND, "no statistics for that month\n").into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, DISCLOSURE_CACHE),
            (header::VARY, "Accept-Language"),
            (header::CONTENT_LANGUAGE, lang.tag()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    set_etag(&mut response, &tag);
    response
}

async fn json(State(disclosure): State<Arc<Disclosure>>, headers: HeaderMap) -> Response {
    let snapshot = match current(disclosure).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let tag = format!("\"{}\"", snapshot.size());
    if not_modified(&headers, &tag) {
        return not_modified_response(&tag);
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, DISCLOSURE_CACHE),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        snapshot.json(),
    )
        .into_response();
    set_etag(&mut response, &tag);
    response
}

async fn csv(State(disclosure): State<Arc<Disclosure>>, Path(file): Path<String>) -> Response {
    let Some(table) = file.strip_suffix(".csv") else {
        return not_found();
    };
    let snapshot = match current(disclosure).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    match snapshot.csv(table) {
        Some(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/csv; charset=utf-8; header=present",
                ),
                (header::CACHE_CONTROL, DISCLOSURE_CACHE),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => not_found(),
    }
}

async fn policy_text(
    State(disclosure): State<Arc<Disclosure>>,
    Path(hash): Path<String>,
) -> Response {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return (
            StatusCode::BAD_REQUEST,
            "a policy set hash is 64 lowercase hex characters\n",
        )
            .into_response();
    }
    let snapshot = match current(disclosure.clone()).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let result =
        tokio::task::spawn_blocking(move || disclosure.policy_text(&snapshot, &hash)).await;
    match result {
        Ok(Ok(Some(text))) => text_response(text, IMMUTABLE),
        Ok(Ok(None)) => not_found(),
        Ok(Err(err)) => {
            tracing::warn!(cause = %err, "policy text not served");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the policy text cannot be read now\n",
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The newest statistics, refreshed off the async workers when due.
async fn current(disclosure: Arc<Disclosure>) -> Result<Arc<Snapshot>, Response> {
    if let Some(snapshot) = disclosure.fresh() {
        return Ok(snapshot);
    }
    match tokio::task::spawn_blocking(move || disclosure.current()).await {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(err)) => {
            tracing::warn!(cause = %err, "no disclosure statistics");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the disclosure statistics cannot be computed now\n",
            )
                .into_response())
        }
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

fn is_month(text: &str) -> bool {
    match text.split_once('-') {
        Some((year, month)) => {
            year.len() == 4
                && month.len() == 2
                && year
                    .bytes()
                    .chain(month.bytes())
                    .all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
}

fn not_modified_response(tag: &str) -> Response {
    let mut response = (
        StatusCode::NOT_MODIFIED,
        [(header::CACHE_CONTROL, DISCLOSURE_CACHE)],
    )
        .into_response();
    set_etag(&mut response, tag);
    response
}

fn set_etag(response: &mut Response, tag: &str) {
    if let Ok(value) = HeaderValue::from_str(tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

fn cache_for(full: bool) -> &'static str {
    if full { IMMUTABLE } else { SHORT_LIVED }
}

fn text_response(body: String, cache: &'static str) -> Response {
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
