//! auditor (skeleton).
