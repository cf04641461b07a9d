//! CUJ SLIs in the stream: good and valid events per Critical User Journey, kept in rolling
//! windows, evaluated against SLOs (compliance, error budget, burn rates, multiwindow alerts).
//!
//! It is the SLI processor of the pipeline: the assembler's shards hand it released traces
//! ([`observer`]), its engine runs on a thread of its own and readers work from snapshots
//! ([`processor`]); no lock is shared between the span path and any reader.
//!
//! Everything here is driven by an explicit clock (milliseconds since the Unix epoch), so
//! tests move time without sleeping. It reads spans in wire form and the assembler's
//! released traces, and knows nothing of OTLP transport, exposition formats or the config
//! file: it owns its `slo:` section's type ([`config`]), which checks itself, and the binary
//! composes it. It must not reach into the receivers, the exporters or the binary.
//!
//! # Layout
//! - [`condition`]: root matching and bad/exclude conditions over any [`condition::SpanFacts`]
//!   (exact, any-of, regex, exists, ranges; status); [`condition::ConditionSet`], the
//!   `scope: trace` conditions deduplicated, so spans are classified into bits as they
//!   arrive and a released trace need not be read again span by span.
//! - [`config`]: the `slo:` section ([`config::SloConfig`]: state file, settling, limits) and
//!   its `validate`; [`config::SloConfig::limits`] resolves it into [`limits::SliLimits`].
//! - [`cuj`]: a CUJ definition and the SLI event (or exclusion) a released trace yields.
//! - [`observer`]: [`observer::SliObserver`], the assembler's observer on each shard: reads
//!   released traces in wire form (only what the CUJs use), begins their events with the
//!   shared [`engine::SliMatcher`] and hands them on through an [`processor::SliFeed`].
//! - [`processor`]: the engine's thread, the bounded hand-off from the span path
//!   ([`processor::SliFeed`]) and the readers' side ([`processor::SliReader`]: jobs on the
//!   engine thread, report and families snapshots).
//! - [`engine`]: [`engine::SliEngine`] — series with a cardinality cap, exact event counts,
//!   latency buckets that include every threshold, objective states, as metric families.
//!   The module root takes the engine's inputs (matched traces, late and linked spans,
//!   ticks); each submodule owns one part: `matching` ([`engine::SliMatcher`]), `record`
//!   (series and windows), `memory` (what the engine holds,
//!   [`engine::SliEngine::memory_bytes`], kept within [`limits::SliLimits`]: new series
//!   overflow, settling traces are recorded early, idle series expire, a large state file
//!   is restored in part), `reports`, `export` (metric families and the OTLP push view) and
//!   `persist` (the state file).
//! - [`limits`]: what bounds the engine, [`limits::SliLimits`] — a byte limit, a cap on
//!   dimension values, a TTL for idle series — and the reasons each is counted under.
//! - `series`: one CUJ's series — counts, windows, histogram, exemplars — with their memory
//!   kept as running totals, and the removal of idle series.
//! - [`histogram`]: [`histogram::ExpHistogram`], latency as a base-2 exponential histogram
//!   (scale 9, 1 µs–1 h, ≤ 32 KiB): exact counts, quantiles within 0.1%, OTLP-ready buckets.
//! - [`settle`]: events of `end_to_end` and `{from, to}` CUJs waiting for late spans and
//!   linked continuations (bounded by count and bytes, clock-driven).
//! - [`state`]: the SLO state file format (windows survive restarts; foreign or corrupt files
//!   are refused with a reason).
//! - [`window`]: [`window::SlicedCounter`], good/valid counts over windows from 5 minutes to
//!   31 days in fixed memory; [`window::SeriesWindows`], both SLIs of one series in one
//!   counter (24.6 KiB, 28 KiB in the allocator's size class).
//! - `table`: hash tables counted by the slots they occupy, not the entries they hold.
//! - [`slo`]: [`slo::Objective`] evaluation — SLI per window, budget remaining, burn rates,
//!   page/ticket alerts (SRE Workbook factors, scaled to the objective's period), projected
//!   exhaustion.
//! - [`trace_link`]: [`trace_link::TraceLink`], `slo.trace_link`'s URL template, which
//!   the reports render into a link beside every trace id.
//! - [`report`]: [`report::Report`], the whole state as plain serializable data — the one
//!   shape the status page, the JSON/gRPC status API and `cujo status` read.
#![forbid(unsafe_code)]

pub mod condition;
pub mod config;
pub mod cuj;
pub mod engine;
pub mod histogram;
pub mod limits;
pub mod observer;
pub mod processor;
pub mod report;
pub(crate) mod series;
pub mod settle;
pub mod slo;
pub mod state;
pub(crate) mod table;
pub mod trace_link;
pub mod window;
