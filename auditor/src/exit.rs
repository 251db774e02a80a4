//! The exit codes of every auditor verdict: 0 valid, 2 invalid (the log or a proof failed a
//! check), 1 error (bad input, I/O, network). Scripts rely on these numbers.
//!
//! This module does not print anything; the CLI decides what to say before exiting.

use std::process::{ExitCode, Termination};

/// What a verification ended with, as a process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditExitCode {
    /// The input could not be checked: unreadable, malformed, or the network failed (1).
    Error,
    /// Something was checked and found wrong: a bad signature, proof or commitment, a fork or
    /// rollback, a decision the rules would not have made (2).
    Invalid,
    /// Everything checked is valid (0).
    Valid,
}

impl AuditExitCode {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Valid => 0,
            Self::Error => 1,
            Self::Invalid => 2,
        }
    }
}

impl Termination for AuditExitCode {
    fn report(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<AuditExitCode> for ExitCode {
    fn from(code: AuditExitCode) -> Self {
        Self::from(code.code())
    }
}
