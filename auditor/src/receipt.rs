//! Receipts (docs/design.md §4): reading one from a file and verifying it offline, years later, with
//! nothing but the log's verifier key.
//!
//! Two forms are read:
//!
//! - the `Receipt` message in proto3 JSON, as grpcurl prints it (`{"leafIndex":"5","leafHash":
//!   "<base64>","checkpoint":"...","inclusionProof":["<base64>",...],"treeSize":"6"}`), alone or
//!   as the `receipt` field of a whole response. 64-bit integers may be strings or numbers,
//!   bytes standard or URL-safe base64, field names lowerCamelCase or the proto names; fields
//!   at their default value may be missing (proto3 JSON omits them), unknown fields are ignored.
//!   The receipt's `leaf` (the entry's public leaf bytes, which `Authorize` answers carry) is
//!   read when present.
//! - a whole `Authorize` response in the same JSON: its `decision`, `determiningPolicies`,
//!   `reasons` and `reviewRequired` are read as the [`Answer`] next to the receipt.
//! - a C2SP `tlog-proof` (c2sp.org/tlog-proof). It holds no leaf hash, so verifying it needs the
//!   leaf itself.
//!
//! Verifying checks, in this order: the checkpoint's signature by the log key (and that its
//! origin is the key's name), that the receipt's tree size is the checkpoint's, the leaf bytes
//! against the leaf hash (when given), the inclusion proof against the checkpoint's root, and the
//! body against the leaf's commitment (when given). Then, for a whole `Authorize` response, that
//! the answer is the logged one: the leaf must be a decision whose public `decision` and `review`
//! are the answer's, and when the private body is given, its determining policies and reasons
//! must be the answer's too (they are not in the public leaf).
//!
//! This module does not fetch anything and does not say whether the checkpoint is consistent
//! with others (see `trust`).

use ledger::tlog_proof::{MAX_TLOG_PROOF_SIZE, TLOG_PROOF_HEADER};
use ledger::{
    checkpoint::{CheckpointError, SignedCheckpoint},
    entry::{EntryError, Leaf, verify_commitment},
    hash::{Hash, LeafIndex, TreeSize, hash_leaf},
    note::NoteVerifier,
    proof::{InclusionProof, MAX_PROOF_LEN, ProofError},
    tlog_proof::{TlogProof, TlogProofError},
};
use serde_json::Value;

use crate::proto_json;

/// The largest receipt file accepted, in bytes (a `tlog-proof` may carry a full-size note).
pub const MAX_RECEIPT_SIZE: usize = MAX_TLOG_PROOF_SIZE;

/// A receipt as read from a file, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's position in the log.
    pub leaf_index: LeafIndex,
    /// The entry's RFC 9162 leaf hash; none in a `tlog-proof`, which leaves it to the verifier.
    pub leaf_hash: Option<Hash>,
    /// The signed checkpoint note the proof is against.
    pub checkpoint: String,
    /// The inclusion proof, leaf level first.
    pub inclusion_proof: Vec<Hash>,
    /// The tree size the receipt claims; none in a `tlog-proof`, which takes the checkpoint's.
    pub tree_size: Option<TreeSize>,
    /// The entry's public leaf bytes, when the receipt carries them.
    pub leaf: Option<Vec<u8>>,
    /// The decision the response around the receipt states, when it is an `Authorize` answer.
    pub answer: Option<Answer>,
}

/// What an `Authorize` response told its caller (docs/api.md `AuthorizeResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// `ALLOW`, `DENY`, or `DECISION_UNSPECIFIED` when the field is missing.
    pub decision: String,
    /// The determining policies' ids.
    pub determining_policies: Vec<String>,
    /// The reasons.
    pub reasons: Vec<String>,
    /// Whether review is required.
    pub review_required: bool,
}

/// How much of an [`Answer`] was checked against the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerCheck {
    /// The decision and review flag match the public leaf; the determining policies and reasons
    /// were not checked, for want of the private body.
    Leaf,
    /// The decision, review flag, determining policies and reasons all match the logged entry.
    LeafAndBody,
}

/// What a verified receipt proves. Only [`Receipt::verify`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    checkpoint: SignedCheckpoint,
    leaf_index: LeafIndex,
    leaf_hash: Hash,
    leaf: Option<Leaf>,
    body_checked: bool,
    answer: Option<(Answer, AnswerCheck)>,
}

impl VerifiedReceipt {
    /// The checkpoint, signed by the log key, whose tree holds the entry.
    #[must_use]
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.checkpoint
    }

    /// The entry's position.
    #[must_use]
    pub fn leaf_index(&self) -> LeafIndex {
        self.leaf_index
    }

    /// The entry's leaf hash.
    #[must_use]
    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }

    /// The leaf, when it was given and matched the leaf hash.
    #[must_use]
    pub fn leaf(&self) -> Option<&Leaf> {
        self.leaf.as_ref()
    }

    /// Whether a body was given and matched the leaf's commitment.
    #[must_use]
    pub fn body_checked(&self) -> bool {
        self.body_checked
    }

    /// The answer around the receipt and how far it was checked, for an `Authorize` response.
    #[must_use]
    pub fn answer(&self) -> Option<&(Answer, AnswerCheck)> {
        self.answer.as_ref()
    }
}

impl Receipt {
    /// Reads either form, told apart by the `tlog-proof` header line.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::TooLarge`], and the errors of [`Receipt::from_json`] or
    /// [`Receipt::from_tlog_proof`].
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        check_size(text)?;
        if text.starts_with(TLOG_PROOF_HEADER) {
            return Self::from_tlog_proof(text);
        }
        Self::from_json(text)
    }

    /// Reads a `Receipt` message in proto3 JSON, or an object whose `receipt` field is one.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::TooLarge`], [`ReceiptError::Json`] for text that is not a JSON object,
    /// [`ReceiptError::InvalidField`] for a field of the wrong type or length.
    pub fn from_json(text: &str) -> Result<Self, ReceiptError> {
        check_size(text)?;
        let value: Value = serde_json::from_str(text).map_err(|_| ReceiptError::Json)?;
        let mut object = match value {
            Value::Object(object) => object,
            _ => return Err(ReceiptError::Json),
        };
        let mut answer = None;
        if let Some(Value::Object(inner)) = object.remove("receipt") {
            answer = Answer::from_json(&object)?;
            object = inner;
        }
        let field = |camel, snake| proto_json::field(&object, camel, snake);
        let leaf_hash = match field("leafHash", "leaf_hash") {
            None => Hash::default(),
            Some(v) => json_hash(v).ok_or(ReceiptError::InvalidField { field: "leafHash" })?,
        };
        let path = match field("inclusionProof", "inclusion_proof") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_PROOF_LEN => items
                .iter()
                .map(json_hash)
                .collect::<Option<Vec<Hash>>>()
                .ok_or(ReceiptError::InvalidField {
                    field: "inclusionProof",
                })?,
            Some(_) => {
                return Err(ReceiptError::InvalidField {
                    field: "inclusionProof",
                });
            }
        };
        let leaf = match field("leaf", "leaf") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let leaf = json_bytes(v).ok_or(ReceiptError::InvalidField { field: "leaf" })?;
                (!leaf.is_empty()).then_some(leaf)
            }
        };
        let checkpoint = match field("checkpoint", "checkpoint") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(note)) => note.clone(),
            Some(_) => {
                return Err(ReceiptError::InvalidField {
                    field: "checkpoint",
                });
            }
        };
        Ok(Self {
            leaf_index: LeafIndex(json_u64(field("leafIndex", "leaf_index"), "leafIndex")?),
            leaf_hash: Some(leaf_hash),
            checkpoint,
            inclusion_proof: path,
            tree_size: Some(TreeSize(json_u64(
                field("treeSize", "tree_size"),
                "treeSize",
            )?)),
            leaf,
            answer,
        })
    }

    /// Reads a C2SP `tlog-proof`.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::TlogProof`] when it does not parse.
    pub fn from_tlog_proof(text: &str) -> Result<Self, ReceiptError> {
        let proof = TlogProof::parse(text).map_err(ReceiptError::TlogProof)?;
        Ok(Self {
            leaf_index: proof.index,
            leaf_hash: None,
            checkpoint: proof.checkpoint,
            inclusion_proof: proof.path,
            tree_size: None,
            leaf: None,
            answer: None,
        })
    }

    /// Verifies the receipt with the log key `verifier`; `leaf` and `body` are the entry's public
    /// leaf and private body bytes, when the caller has them (a body needs the leaf, which holds
    /// its commitment). The leaf the receipt carries is used when `leaf` is none. For an
    /// `Authorize` answer, checks it against the leaf (and the body, when given).
    ///
    /// # Errors
    ///
    /// [`ReceiptError::NeedsLeaf`] when there is no leaf hash and no leaf, a body but no leaf, or
    /// an answer but no leaf; otherwise the first failed check: [`ReceiptError::Checkpoint`],
    /// [`ReceiptError::TreeSizeMismatch`], [`ReceiptError::LeafHashMismatch`],
    /// [`ReceiptError::Proof`], [`ReceiptError::MalformedLeaf`], [`ReceiptError::Commitment`],
    /// [`ReceiptError::NotADecision`], [`ReceiptError::MalformedBody`],
    /// [`ReceiptError::AnswerMismatch`].
    pub fn verify(
        &self,
        verifier: &NoteVerifier,
        leaf: Option<&[u8]>,
        body: Option<&[u8]>,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        if let (Some(given), Some(carried)) = (leaf, self.leaf.as_deref())
            && given != carried
        {
            // Both must be the entry's leaf; at most one can hash to the leaf hash.
            return Err(ReceiptError::LeafHashMismatch);
        }
        let leaf = leaf.or(self.leaf.as_deref());
        if self.answer.is_some() && leaf.is_none() {
            return Err(ReceiptError::NeedsLeaf);
        }
        let leaf_hash = match (self.leaf_hash, leaf) {
            (_, None) if body.is_some() => return Err(ReceiptError::NeedsLeaf),
            (Some(hash), _) => hash,
            (None, Some(leaf)) => hash_leaf(leaf),
            (None, None) => return Err(ReceiptError::NeedsLeaf),
        };
        let checkpoint = SignedCheckpoint::verify(&self.checkpoint, verifier)
            .map_err(ReceiptError::Checkpoint)?;
        let size = checkpoint.checkpoint().size;
        if let Some(claimed) = self.tree_size
            && claimed != size
        {
            return Err(ReceiptError::TreeSizeMismatch {
                receipt: claimed,
                checkpoint: size,
            });
        }
        if let Some(leaf) = leaf
            && hash_leaf(leaf) != leaf_hash
        {
            return Err(ReceiptError::LeafHashMismatch);
        }
        let proof = InclusionProof {
            leaf_index: self.leaf_index,
            tree_size: size,
            path: self.inclusion_proof.clone(),
        };
        proof
            .verify(&leaf_hash, &checkpoint.checkpoint().root)
            .map_err(ReceiptError::Proof)?;
        let decoded = leaf
            .map(|leaf| Leaf::decode(leaf).map_err(ReceiptError::MalformedLeaf))
            .transpose()?;
        if let (Some(leaf), Some(body)) = (&decoded, body) {
            verify_commitment(leaf, body).map_err(ReceiptError::Commitment)?;
        }
        let answer = match (&self.answer, &decoded) {
            (Some(answer), Some(leaf)) => Some((answer.clone(), answer.check(leaf, body)?)),
            _ => None,
        };
        Ok(VerifiedReceipt {
            checkpoint,
            leaf_index: self.leaf_index,
            leaf_hash,
            leaf: decoded,
            body_checked: body.is_some(),
            answer,
        })
    }
}

/// The entry kind of a logged decision.
const DECISION_KIND: &str = "access.decision";

impl Answer {
    /// Reads the answer from the fields of a response around a receipt; none when the response
    /// states no decision (it is not an `Authorize` answer).
    fn from_json(object: &serde_json::Map<String, Value>) -> Result<Option<Self>, ReceiptError> {
        let field = |camel: &str, snake: &str| object.get(camel).or_else(|| object.get(snake));
        let decision = field("decision", "decision");
        let policies = field("determiningPolicies", "determining_policies");
        let reasons = field("reasons", "reasons");
        let review = field("reviewRequired", "review_required");
        if decision.is_none() && policies.is_none() && reasons.is_none() && review.is_none() {
            return Ok(None);
        }
        // proto3 JSON: the enum by name or number; missing is the default.
        let decision = match decision {
            None | Some(Value::Null) => "DECISION_UNSPECIFIED".to_owned(),
            Some(Value::String(name)) => name.clone(),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => "DECISION_UNSPECIFIED".to_owned(),
                Some(1) => "ALLOW".to_owned(),
                Some(2) => "DENY".to_owned(),
                _ => return Err(ReceiptError::InvalidField { field: "decision" }),
            },
            Some(_) => return Err(ReceiptError::InvalidField { field: "decision" }),
        };
        let review_required = match review {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return Err(ReceiptError::InvalidField {
                    field: "reviewRequired",
                });
            }
        };
        Ok(Some(Self {
            decision,
            determining_policies: json_strings(policies).ok_or(ReceiptError::InvalidField {
                field: "determiningPolicies",
            })?,
            reasons: json_strings(reasons)
                .ok_or(ReceiptError::InvalidField { field: "reasons" })?,
            review_required,
        }))
    }

    /// Checks the answer against the verified `leaf` and, when given, the verified `body`.
    fn check(&self, leaf: &Leaf, body: Option<&[u8]>) -> Result<AnswerCheck, ReceiptError> {
        if leaf.kind.as_str() != DECISION_KIND {
            return Err(ReceiptError::NotADecision {
                kind: leaf.kind.as_str().to_owned(),
            });
        }
        let review = if self.review_required {
            "true"
        } else {
            "false"
        };
        compare("decision", &self.decision, leaf.attribute("decision"))?;
        compare("review", review, leaf.attribute("review"))?;
        let Some(body) = body else {
            return Ok(AnswerCheck::Leaf);
        };
        let logged = LoggedDecision::from_body(body)?;
        compare_lists(
            "determining policies",
            &self.determining_policies,
            &logged.determining_policies,
        )?;
        compare_lists("reasons", &self.reasons, &logged.reasons)?;
        // The body states the decision too; it agrees with its leaf on an honest log, and a
        // log whose header and body disagree is caught here as well as by a replay.
        compare("decision", &self.decision, Some(logged.effect.as_str()))?;
        let logged_review = if logged.review_required {
            "true"
        } else {
            "false"
        };
        compare("review", review, Some(logged_review))?;
        Ok(AnswerCheck::LeafAndBody)
    }
}

/// What a decision's private body states about its answer. The body is `nonce || payload`, the
/// payload the decision event's JSON (docs/design.md §3), whose field names are stable; read here
/// without the `policy` crate, so that receipt verification stays free of it.
struct LoggedDecision {
    effect: String,
    determining_policies: Vec<String>,
    reasons: Vec<String>,
    review_required: bool,
}

impl LoggedDecision {
    fn from_body(body: &[u8]) -> Result<Self, ReceiptError> {
        let payload = body
            .get(ledger::entry::BODY_NONCE_LEN..)
            .ok_or(ReceiptError::MalformedBody)?;
        let event: Value =
            serde_json::from_slice(payload).map_err(|_| ReceiptError::MalformedBody)?;
        if event.get("kind").and_then(Value::as_str) != Some(DECISION_KIND) {
            return Err(ReceiptError::MalformedBody);
        }
        let decision = event.get("decision").ok_or(ReceiptError::MalformedBody)?;
        Ok(Self {
            effect: decision
                .get("effect")
                .and_then(Value::as_str)
                .ok_or(ReceiptError::MalformedBody)?
                .to_owned(),
            determining_policies: json_strings(decision.get("determining_policies"))
                .ok_or(ReceiptError::MalformedBody)?,
            reasons: json_strings(decision.get("reasons")).ok_or(ReceiptError::MalformedBody)?,
            review_required: decision
                .get("review_required")
                .and_then(Value::as_bool)
                .ok_or(ReceiptError::MalformedBody)?,
        })
    }
}

/// The answer's list `field` must be the logged one, item for item.
fn compare_lists(
    field: &'static str,
    answer: &[String],
    logged: &[String],
) -> Result<(), ReceiptError> {
    if answer == logged {
        return Ok(());
    }
    let shown = |items: &[String]| match items {
        [] => "none".to_owned(),
        items => items.join("`, `"),
    };
    Err(ReceiptError::AnswerMismatch {
        field,
        answer: shown(answer),
        logged: shown(logged),
    })
}

/// The answer's `value` of `field` must be the logged one.
fn compare(field: &'static str, answer: &str, logged: Option<&str>) -> Result<(), ReceiptError> {
    if logged == Some(answer) {
        return Ok(());
    }
    Err(ReceiptError::AnswerMismatch {
        field,
        answer: answer.to_owned(),
        logged: logged.unwrap_or("nothing").to_owned(),
    })
}

/// Why a receipt could not be read or did not verify. [`ReceiptError::is_invalid`] tells a
/// receipt that was checked and found wrong from one that could not be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The answer says something else than the logged entry.
    #[error("the answer says {field} `{answer}`, but the log says `{logged}`")]
    AnswerMismatch {
        /// What differs: `decision`, `review`, `determining policies` or `reasons`.
        field: &'static str,
        /// What the answer says.
        answer: String,
        /// What the log says.
        logged: String,
    },
    /// The checkpoint is malformed or not signed by the log key.
    #[error("checkpoint does not verify")]
    Checkpoint(#[source] CheckpointError),
    /// The body does not match the leaf's commitment.
    #[error("body check failed")]
    Commitment(#[source] EntryError),
    /// A JSON field has the wrong type, is not canonical base64 or decimal, or a hash is not 32
    /// bytes.
    #[error("receipt field `{field}` is malformed")]
    InvalidField {
        /// The field, by its JSON name.
        field: &'static str,
    },
    /// The text is neither a JSON object nor a `tlog-proof`.
    #[error("receipt is neither proto3 JSON nor a tlog-proof")]
    Json,
    /// The leaf bytes do not hash to the receipt's leaf hash.
    #[error("leaf does not hash to the receipt's leaf hash")]
    LeafHashMismatch,
    /// The body matches the leaf's commitment but is not a decision event.
    #[error("the body is not a well-formed decision event")]
    MalformedBody,
    /// The leaf matches the proof but is not a well-formed akashi leaf.
    #[error("leaf is not a well-formed akashi leaf")]
    MalformedLeaf(#[source] EntryError),
    /// A body was given without its leaf, a `tlog-proof` without the leaf it proves, or an
    /// `Authorize` answer without the leaf that states the logged decision.
    #[error(
        "the leaf is needed for this check (a tlog-proof names no leaf hash, a body needs the leaf's commitment, an answer is checked against the leaf's decision): give `--leaf`"
    )]
    NeedsLeaf,
    /// The receipt of an `Authorize` answer proves an entry that is not a decision.
    #[error("the answer's receipt is for a `{kind}` entry, not a decision")]
    NotADecision {
        /// The entry's kind.
        kind: String,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("inclusion proof rejected")]
    Proof(#[source] ProofError),
    /// The `tlog-proof` does not parse.
    #[error("malformed tlog-proof")]
    TlogProof(#[source] TlogProofError),
    /// The file is larger than [`MAX_RECEIPT_SIZE`].
    #[error("receipt is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The checkpoint lacks the cosignatures the witness policy asks for, or one of them is
    /// invalid.
    #[error("checkpoint is not witnessed as required")]
    Witnesses(#[source] ledger::cosignature::CosignatureError),
    /// The receipt's tree size is not the checkpoint's.
    #[error("receipt claims tree size {receipt} but its checkpoint has size {checkpoint}")]
    TreeSizeMismatch {
        /// The size in the receipt.
        receipt: TreeSize,
        /// The size in the checkpoint.
        checkpoint: TreeSize,
    },
}

impl ReceiptError {
    /// True when the receipt was checked and found wrong (exit 2); false when it could not be
    /// read or checked (exit 1).
    pub fn is_invalid(&self) -> bool {
        match self {
            Self::AnswerMismatch { .. }
            | Self::Checkpoint(_)
            | Self::Commitment(_)
            | Self::MalformedBody
            | Self::NotADecision { .. }
            | Self::LeafHashMismatch
            | Self::MalformedLeaf(_)
            | Self::Proof(_)
            | Self::TreeSizeMismatch { .. }
            | Self::Witnesses(_) => true,
            Self::InvalidField { .. }
            | Self::Json
            | Self::NeedsLeaf
            | Self::TlogProof(_)
            | Self::TooLarge { .. } => false,
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> crate::exit::AuditExitCode {
        if self.is_invalid() {
            crate::exit::AuditExitCode::Invalid
        } else {
            crate::exit::AuditExitCode::Error
        }
    }
}

fn check_size(text: &str) -> Result<(), ReceiptError> {
    if text.len() > MAX_RECEIPT_SIZE {
        return Err(ReceiptError::TooLarge {
            size: text.len(),
            max: MAX_RECEIPT_SIZE,
        });
    }
    Ok(())
}

/// A proto3 JSON `uint64`: a decimal string or a non-negative integer number; missing or null is
/// the default, 0.
fn json_u64(value: Option<&Value>, field: &'static str) -> Result<u64, ReceiptError> {
    proto_json::uint64(value).ok_or(ReceiptError::InvalidField { field })
}

/// A proto3 JSON `bytes` field holding a 32-byte hash: standard or URL-safe base64, padded or not.
fn json_hash(value: &Value) -> Option<Hash> {
    Hash::from_slice(&json_bytes(value)?).ok()
}

/// A proto3 JSON `bytes` field: standard or URL-safe base64, padded or not.
fn json_bytes(value: &Value) -> Option<Vec<u8>> {
    proto_json::bytes(value)
}

/// A proto3 JSON `repeated string` field; missing or null is empty.
fn json_strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
