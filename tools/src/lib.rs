//! akashi developer tools. Shared code of the binaries in `src/bin/`:
//!
//! - [`load`]: the `akashi-load` load generator (N connections × M calls in flight, for a
//!   duration or a request count, reporting throughput, latency percentiles and errors), with
//!   the `health` and `authorize` workloads. It also checks correctness under load: every
//!   `Authorize` answer must carry a receipt, and a sample of receipts is verified (checkpoint
//!   signature and inclusion proof).
//!
//! Tools talk to a server on this machine only (loopback addresses), and every loop is bounded
//! in count and time.

pub mod load;
pub mod vectors;
