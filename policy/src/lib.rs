//! akashi's policy crate: the typed domain, the log events, the state derived from them, and
//! access decisions by Cedar.
//!
//! It is the only crate that imports `cedar_policy`, and the one place where the domain state
//! machine lives, so the server and a regulator's replay compute the same decisions from the same
//! log:
//!
//! - [`domain`]: identifiers, vocabularies (purposes, levels, categories, ...) with their
//!   hierarchies, directory and consent records, timestamps.
//! - [`event`]: [`Event`](event::Event), the body of every state-changing or decision log
//!   entry, with its public attributes.
//! - [`state`]: [`state::apply`] folds events into a key-value map (the server's store or a
//!   `BTreeMap`), plus read and validation helpers.
//! - [`directory`]: the directory as prebuilt Cedar entities, kept in step with the state.
//! - [`facts`]: [`Facts`](facts::Facts), what one decision reads from the state, and consent
//!   resolution.
//! - [`policy_set`]: a policy set as an artefact: its canonical text and hash, the schema it is
//!   validated against, the default set, and the limits on its text.
//! - [`engine`]: [`PolicyEngine`](engine::PolicyEngine), a compiled policy set, and its decisions.
//! - [`limits`]: bounds on the nesting and size of policy text, checked before Cedar parses it.
//! - [`decision`]: [`Request`](decision::Request) and [`Decision`](decision::Decision).
//! - `explain`: why a request was denied by default, in plain words (the first reason of such a
//!   deny).
//! - [`whatif`]: which past decisions a candidate policy set would change.
//! - [`replay`]: re-running a log's events and decisions, as a regulator does.
//! - [`disclosure`]: the public disclosure statistics, counted from public leaf headers alone.
//!
//! The crate does no I/O and knows nothing of gRPC or the ledger's encoding; it deliberately does
//! not depend on `ledger` or `proto`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use policy::{event::Event, engine::PolicyEngine, state};
//!
//! let engine = PolicyEngine::default_set()?;
//! let mut kv = BTreeMap::new();
//! let activate = Event::ActivatePolicySet {
//!     policies: engine.text().to_owned(),
//!     hash: engine.hash(),
//! };
//! state::apply(&mut kv, &activate, 0)?;
//! assert_eq!(state::active_policy_set_hash(&kv)?, Some(engine.hash()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod decision;
pub mod directory;
pub mod disclosure;
pub mod domain;
pub mod engine;
pub mod event;
mod explain;
pub mod facts;
pub mod labels;
pub mod limits;
pub mod policy_set;
pub mod replay;
pub mod state;
pub mod whatif;
