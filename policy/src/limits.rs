//! Bounds on the shape of policy text, checked before Cedar parses it.
//!
//! Cedar's parser turns the text into a tree and then walks it recursively, with no depth guard
//! (its evaluator and typechecker have one; the parser, the tree's `Drop`, `Clone` and printing
//! do not). Nested brackets, nested `if`, and long operator chains all make that tree deep, and
//! a deep enough tree overflows the thread's stack and aborts the process. Policy text comes
//! from outside (`ValidatePolicySet`, `ActivatePolicySet`, a log being replayed), so
//! [`check`] bounds it first, with a lexical scan that needs no recursion:
//!
//! - [`MAX_NESTING`]: how deep `(`, `[` and `{` nest, counted together;
//! - [`MAX_EXPRESSION_TERMS`]: how many operators (`&& || + - * / % == != < <= > >= ! .`) and
//!   keywords (`if then else has like in is`) one policy holds. Each of them adds at most one
//!   level to Cedar's tree, so this bounds the depth a chain (`a + a + …`, `if … else if …`)
//!   can reach without brackets.
//!
//! The scan skips string literals (with their `\` escapes) and `//` comments as Cedar's lexer
//! does, so a bracket in a string neither counts nor hides one outside. A policy ends at a `;`
//! outside brackets. Both limits are well above what real policies need (the default set nests 4
//! deep and its largest policy has 29 terms) and low enough that Cedar parses, validates and
//! evaluates a policy at both limits at once on a 1 MiB thread stack, half of a tokio worker's
//! (the tests of `engine` prove it). Cedar's evaluator and typechecker check the remaining stack
//! themselves and fail with a recursion-limit error; its parser does not, which is why this scan
//! exists. It does not check that brackets match or that the text is Cedar: that is the parser's
//! job once the text is known to be shallow.

use std::fmt;

#[cfg(test)]
mod tests;

/// Deepest nesting of brackets (`(`, `[` and `{` together) in a policy.
pub const MAX_NESTING: usize = 32;

/// Most operators and keywords in one policy (see the module docs for the list).
pub const MAX_EXPRESSION_TERMS: usize = 128;
/// Longest `@id` of a policy, in bytes.
pub const MAX_POLICY_ID_LEN: usize = 128;

/// A policy breaks one of the limits of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Brackets nest deeper than [`MAX_NESTING`].
    #[error("{policy} nests brackets {found} deep, at most {max}")]
    Nesting {
        /// The policy concerned.
        policy: PolicyName,
        /// How deep its brackets nest.
        found: usize,
        /// The limit.
        max: usize,
        /// Byte offset of the first bracket past the limit.
        offset: usize,
    },
    /// A policy has more operators and keywords than [`MAX_EXPRESSION_TERMS`].
    #[error("{policy} has {found} operators and keywords, at most {max}")]
    ExpressionTerms {
        /// The policy concerned.
        policy: PolicyName,
        /// How many operators and keywords it has.
        found: usize,
        /// The limit.
        max: usize,
        /// Byte offset of the first operator or keyword past the limit.
        offset: usize,
    },
}

impl LimitError {
    /// Byte offset in the scanned text where the limit was first exceeded.
    pub fn offset(&self) -> usize {
        match self {
            Self::Nesting { offset, .. } | Self::ExpressionTerms { offset, .. } => *offset,
        }
    }

    /// The policy concerned.
    pub fn policy(&self) -> &PolicyName {
        match self {
            Self::Nesting { policy, .. } | Self::ExpressionTerms { policy, .. } => policy,
        }
    }
}

/// How a limit error names a policy: its `@id` when the scan found a well-formed one before the
/// limit was crossed, else its 1-based position in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyName {
    /// The policy's `@id("...")`.
    Id(String),
    /// The policy's 1-based position in the set.
    Position(usize),
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "policy `{id}`"),
            Self::Position(n) => write!(f, "policy number {n}"),
        }
    }
}

/// Checks every policy of `text` against [`MAX_NESTING`] and [`MAX_EXPRESSION_TERMS`], in one
/// pass without recursion, in time linear in the text.
///
/// # Errors
///
/// [`LimitError`] for the first policy that breaks a limit (nesting is checked first).
pub fn check(text: &str) -> Result<(), LimitError> {
    let mut scan = PolicyScan::new(1);
    let mut tokens = Tokens::new(text.as_bytes());
    while let Some((token, offset)) = tokens.next_token() {
        match token {
            Token::Open => {
                scan.depth = scan.depth.saturating_add(1);
                if scan.depth > scan.max_depth {
                    scan.max_depth = scan.depth;
                }
                if scan.depth > MAX_NESTING && scan.nesting_offset.is_none() {
                    scan.nesting_offset = Some(offset);
                }
            }
            Token::Close => scan.depth = scan.depth.saturating_sub(1),
            Token::Term => {
                scan.terms = scan.terms.saturating_add(1);
                if scan.terms > MAX_EXPRESSION_TERMS && scan.terms_offset.is_none() {
                    scan.terms_offset = Some(offset);
                }
            }
            Token::Semicolon if scan.depth == 0 => {
                scan.finish()?;
                scan = PolicyScan::new(scan.position.saturating_add(1));
            }
            Token::Semicolon | Token::Other => {}
            Token::At => {}
            Token::Ident(name) => {
                if scan.depth == 0 && name == b"id" && scan.last_was_at {
                    scan.id_state = IdState::SawId;
                }
            }
            Token::Str(content) => {
                if scan.id_state == IdState::SawOpen && scan.depth == 1 && scan.id.is_none() {
                    scan.id = plain_id(content);
                }
            }
        }
        scan.id_state = match (scan.id_state, token) {
            (IdState::SawId, Token::Open) => IdState::SawOpen,
            (IdState::SawId, Token::Ident(_)) => IdState::SawId,
            _ => IdState::None,
        };
        scan.last_was_at = token == Token::At;
    }
    scan.finish()
}

/// Where the scan is in an `@id("...")` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdState {
    None,
    SawId,
    SawOpen,
}

/// What the scan knows of the policy it is in.
struct PolicyScan {
    position: usize,
    id: Option<String>,
    id_state: IdState,
    last_was_at: bool,
    depth: usize,
    max_depth: usize,
    nesting_offset: Option<usize>,
    terms: usize,
    terms_offset: Option<usize>,
}

impl PolicyScan {
    fn new(position: usize) -> Self {
        Self {
            position,
            id: None,
            id_state: IdState::None,
            last_was_at: false,
            depth: 0,
            max_depth: 0,
            nesting_offset: None,
            terms: 0,
            terms_offset: None,
        }
    }

    /// The policy's verdict, once its text has been scanned to the end.
    fn finish(&mut self) -> Result<(), LimitError> {
        let policy = || match &self.id {
            Some(id) => PolicyName::Id(id.clone()),
            None => PolicyName::Position(self.position),
        };
        if let Some(offset) = self.nesting_offset {
            return Err(LimitError::Nesting {
                policy: policy(),
                found: self.max_depth,
                max: MAX_NESTING,
                offset,
            });
        }
        if let Some(offset) = self.terms_offset {
            return Err(LimitError::ExpressionTerms {
                policy: policy(),
                found: self.terms,
                max: MAX_EXPRESSION_TERMS,
                offset,
            });
        }
        Ok(())
    }
}

/// The raw content of an `@id` string literal, when it is a plain id that is safe to repeat in a
/// message (the full rules are checked after parsing).
fn plain_id(content: &[u8]) -> Option<String> {
    let plain = !content.is_empty()
        && content.len() <= MAX_POLICY_ID_LEN
        && content
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    plain
        .then(|| std::str::from_utf8(content).ok().map(str::to_owned))
        .flatten()
}

/// A lexical token, as far as the limits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// `(`, `[` or `{`.
    Open,
    /// `)`, `]` or `}`.
    Close,
    /// An operator or keyword that adds a level to an expression tree.
    Term,
    /// `;`.
    Semicolon,
    /// `@`.
    At,
    /// An identifier that is not a counted keyword.
    Ident(&'a [u8]),
    /// A string literal's raw content (escapes left as written).
    Str(&'a [u8]),
    /// Anything else (numbers, `,`, `:`, `::`, bytes Cedar would refuse).
    Other,
}

/// The keywords that make an expression deeper.
const KEYWORDS: [&[u8]; 7] = [b"if", b"then", b"else", b"has", b"like", b"in", b"is"];

/// A lexer over the bytes of policy text, following Cedar's rules for strings and comments.
struct Tokens<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a [u8]) -> Self {
        Self { text, at: 0 }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.at.checked_add(ahead)?).copied()
    }

    /// The next token and its byte offset, or `None` at the end.
    fn next_token(&mut self) -> Option<(Token<'a>, usize)> {
        loop {
            let start = self.at;
            let byte = self.peek(0)?;
            self.at = self.at.saturating_add(1);
            let next = self.peek(0);
            let token = match byte {
                b'(' | b'[' | b'{' => Token::Open,
                b')' | b']' | b'}' => Token::Close,
                b';' => Token::Semicolon,
                b'@' => Token::At,
                b'"' => Token::Str(self.string()),
                b'/' if next == Some(b'/') => {
                    // A comment runs to the end of the line; Cedar also ends it at `\r`.
                    while let Some(b) = self.peek(0) {
                        if b == b'\n' || b == b'\r' {
                            break;
                        }
                        self.at = self.at.saturating_add(1);
                    }
                    continue;
                }
                b'&' | b'|' if next == Some(byte) => {
                    self.at = self.at.saturating_add(1);
                    Token::Term
                }
                b'=' | b'!' | b'<' | b'>' => {
                    if next == Some(b'=') {
                        self.at = self.at.saturating_add(1);
                    }
                    Token::Term
                }
                // Cedar's lexer knows `/` and `%` too (its parser then refuses them): they count
                // as what they would be, operators.
                b'+' | b'-' | b'*' | b'/' | b'%' | b'.' => Token::Term,
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    while self
                        .peek(0)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        self.at = self.at.saturating_add(1);
                    }
                    let word = self.text.get(start..self.at).unwrap_or_default();
                    if KEYWORDS.contains(&word) {
                        Token::Term
                    } else {
                        Token::Ident(word)
                    }
                }
                b if b.is_ascii_whitespace() => continue,
                _ => Token::Other,
            };
            return Some((token, start));
        }
    }

    /// Skips a string literal whose opening `"` has been read; returns its raw content. An
    /// unterminated literal runs to the end of the text (Cedar refuses it).
    fn string(&mut self) -> &'a [u8] {
        let start = self.at;
        while let Some(b) = self.peek(0) {
            match b {
                b'"' => {
                    let content = self.text.get(start..self.at).unwrap_or_default();
                    self.at = self.at.saturating_add(1);
                    return content;
                }
                b'\\' => self.at = self.at.saturating_add(2),
                _ => self.at = self.at.saturating_add(1),
            }
        }
        self.text.get(start..).unwrap_or_default()
    }
}
