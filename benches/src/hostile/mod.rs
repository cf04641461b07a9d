//! Hostile input for `cujo-hostile`: requests built to make a span processor hold or copy far
//! more memory than they occupy on the wire, sent for a bounded time, with cujo's RSS watched.
//!
//! - [`scenario`]: the five scenarios' requests and the cujo config each is aimed at.
//! - [`drive`]: the clients (bounded in time and count, backing off on refusals) and the
//!   closing normal request.
//! - [`report`]: one run's report and the BENCHMARKS.md table row.

pub mod drive;
pub mod report;
pub mod scenario;
