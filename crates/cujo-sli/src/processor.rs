//! The SLI processor: the engine on a thread of its own, fed by the span path through a
//! bounded hand-off and read through snapshots, so no lock is shared between the two.
//!
//! - The span path (each assembler shard) matches its released traces itself
//!   ([`crate::engine::SliMatcher`]) and hands the engine plain data through an [`SliFeed`]:
//!   the events a trace began, the marks of late and linked spans, in batches of up to
//!   [`BATCH_INPUTS`] (what a shard gathered is handed over at the end of each assembler
//!   step). The engine thread drains what waits, then lets inputs gather for [`GATHER`]
//!   before it waits again, so under load it is woken at most once per interval, not once
//!   per batch. Sending never waits for a reader; it
//!   waits only when the engine thread is [`HANDOFF_CAPACITY`] batches behind, which is
//!   back-pressure from recording itself (counted: [`SliFeed::waits`]).
//! - Readers (`/metrics`, the status page and APIs, the notifier, the OTLP push, the state
//!   saver) go through an [`SliReader`]: a job runs on the engine thread between two inputs
//!   and hands back plain data (a [`Report`], metric families, the state file's bytes).
//!   Reports and families are kept as snapshots for [`SliReader::snapshot_max_age`], so
//!   readers polling many times a second cost the engine one build per period; past it the
//!   kept snapshot is still handed out while the next is built, so only the very first
//!   reader waits for the engine. A reader holds its snapshot (an `Arc`) as long as it
//!   likes without holding anything else up.
//! - The thread ticks the engine itself ([`SliEngine::tick_interval`]), so the charts move
//!   and settled events are recorded while no traffic comes.
//!
//! What waits in the hand-off is counted ([`SliReader::queued_bytes`]) so the caller can
//! put it in the budget beside [`SliEngine::memory_bytes`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::engine::{Family, MatchedTrace, SliEngine, SpanMarks};
use crate::report::Report;

/// How many inputs a shard gathers before it hands them over in one message (it also hands
/// over what it has at the end of each assembler step, [`SliFeed::flush`]): one wake-up of
/// the engine thread per batch, not per trace.
pub const BATCH_INPUTS: usize = 64;

/// How many batches may wait between the span path and the engine thread. Recording an
/// event takes about a microsecond, so this is tens of milliseconds of work: enough to ride
/// out a snapshot being built over thousands of series.
pub const HANDOFF_CAPACITY: usize = 512;

/// How long the engine thread lets inputs gather after applying what woke it: at most one
/// wake-up per this interval under load (the hand-off holds [`HANDOFF_CAPACITY`] batches,
/// far more than the span path hands over in it). SLIs move in seconds; this is invisible.
const GATHER: Duration = Duration::from_millis(10);

/// How many waiting inputs the engine applies before a reader's job, at most: a job sees
/// what was handed over before it was asked (read-your-writes for the caller), and a
/// saturated span path cannot starve readers.
const DRAIN_BEFORE_JOB: usize = HANDOFF_CAPACITY;

enum Input {
    Trace(MatchedTrace, u64),
    Late([u8; 16], SpanMarks),
    Linked([u8; 16], [u8; 16], SpanMarks),
}

impl Input {
    /// Bytes this input holds beside its place in a batch, counted while it waits.
    fn heap_bytes(&self) -> usize {
        match self {
            Input::Trace(t, _) => t.heap_bytes(),
            Input::Late(_, m) | Input::Linked(_, _, m) => {
                cujo_wire::alloc::vec_bytes::<(usize, crate::cuj::SpanMark)>(m.marks.capacity())
            }
        }
    }
}

enum Message {
    /// Inputs of one shard, in the order it heard them, and the bytes counted for them.
    Batch(Vec<Input>, usize),
    /// A reader queued a job: look at the jobs now rather than at the next input or tick.
    Wake,
}

type Job = Box<dyn FnOnce(&mut SliEngine) + Send>;

/// What the span path, the readers and the engine thread share: plain counters.
#[derive(Default)]
struct Shared {
    queued_bytes: AtomicUsize,
    /// Sends that found the hand-off full and waited for the engine.
    waits: AtomicU64,
    /// Inputs the engine thread applied.
    applied: AtomicU64,
    /// Inputs not handed over because the engine thread had stopped (a panic).
    lost: AtomicU64,
}

/// Starts the engine's thread. `clock` gives milliseconds since the Unix epoch (the
/// windows' time); `snapshot_max_age` is how old a report or families snapshot handed to
/// a reader may be.
pub fn spawn(
    engine: SliEngine,
    clock: fn() -> u64,
    snapshot_max_age: Duration,
) -> std::io::Result<(SliFeed, SliReader)> {
    let (inputs_tx, inputs) = mpsc::sync_channel(HANDOFF_CAPACITY);
    let (jobs_tx, jobs) = mpsc::channel::<Job>();
    let shared = Arc::new(Shared::default());
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("cujo-sli".into())
        .spawn(move || run(engine, inputs, jobs, clock, &thread_shared))?;
    let feed = SliFeed {
        tx: inputs_tx.clone(),
        shared: shared.clone(),
        pending: Vec::new(),
        pending_bytes: 0,
    };
    let reader = SliReader {
        jobs: jobs_tx,
        wake: inputs_tx,
        shared,
        clock,
        snapshot_max_age,
        reports: Arc::default(),
        families: Arc::default(),
    };
    Ok((feed, reader))
}

/// The engine thread: applies inputs as they come, runs readers' jobs between them, ticks.
/// Ends when every feed and reader is gone.
fn run(
    mut engine: SliEngine,
    inputs: Receiver<Message>,
    jobs: Receiver<Job>,
    clock: fn() -> u64,
    shared: &Shared,
) {
    let every = engine.tick_interval();
    let mut next_tick = Instant::now() + every;
    let apply = |engine: &mut SliEngine, message: Message| {
        let Message::Batch(inputs, bytes) = message else {
            return;
        };
        let n = inputs.len() as u64;
        for input in inputs {
            match input {
                Input::Trace(trace, now_ms) => engine.record(trace, now_ms),
                Input::Late(trace, marks) => engine.record_late(trace, &marks),
                Input::Linked(trace, to, marks) => engine.record_linked(trace, to, &marks),
            }
        }
        shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        shared.applied.fetch_add(n, Ordering::Relaxed);
    };
    let run_job = |engine: &mut SliEngine, job: Job| {
        for input in inputs.try_iter().take(DRAIN_BEFORE_JOB) {
            apply(engine, input);
        }
        job(engine);
    };
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let woken = match inputs.recv_timeout(wait) {
            Ok(input) => {
                apply(&mut engine, input);
                for input in inputs.try_iter().take(HANDOFF_CAPACITY) {
                    apply(&mut engine, input);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                while let Ok(job) = jobs.try_recv() {
                    job(&mut engine);
                }
                return;
            }
        };
        if Instant::now() >= next_tick {
            engine.tick(clock());
            next_tick = Instant::now() + every;
        }
        while let Ok(job) = jobs.try_recv() {
            run_job(&mut engine, job);
        }
        if woken {
            // Let the span path gather before the next wake-up: handing a batch to an
            // engine that is not waiting costs the sender no system call, where waking it
            // costs both sides one. Readers' jobs are still taken at once.
            let until = Instant::now() + GATHER;
            loop {
                match jobs.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(job) => run_job(&mut engine, job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                        break;
                    }
                }
            }
        }
    }
}

/// The span path's end of the hand-off (one clone per assembler shard). Inputs are gathered
/// into batches of [`BATCH_INPUTS`] and handed over when a batch is full, at
/// [`SliFeed::flush`] (the end of each assembler step) and when the feed is dropped.
pub struct SliFeed {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
    pending: Vec<Input>,
    /// Bytes counted for `pending` (already in `Shared::queued_bytes`).
    pending_bytes: usize,
}

impl Clone for SliFeed {
    /// Another shard's end: the same hand-off, a batch of its own.
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }
}

impl SliFeed {
    /// The events a released trace began, released at `now_ms`. Traces that began none
    /// need not be sent.
    pub fn trace(&mut self, trace: MatchedTrace, now_ms: u64) {
        self.push(Input::Trace(trace, now_ms));
    }

    /// Late spans of `trace` (arrived after its release), read into marks.
    pub fn late(&mut self, trace: [u8; 16], marks: SpanMarks) {
        self.push(Input::Late(trace, marks));
    }

    /// A released trace `trace` continuing `linked_to`, its spans read into marks. Send it
    /// before the trace's own events ([`SliFeed::trace`]), as the engine expects.
    pub fn linked(&mut self, trace: [u8; 16], linked_to: [u8; 16], marks: SpanMarks) {
        self.push(Input::Linked(trace, linked_to, marks));
    }

    fn push(&mut self, input: Input) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(BATCH_INPUTS);
            let batch = cujo_wire::alloc::vec_bytes::<Input>(BATCH_INPUTS);
            self.count(batch);
        }
        self.count(input.heap_bytes());
        self.pending.push(input);
        if self.pending.len() >= BATCH_INPUTS {
            self.flush();
        }
    }

    fn count(&mut self, bytes: usize) {
        self.pending_bytes += bytes;
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Hands over what this shard gathered, if anything.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let (inputs, bytes) = (std::mem::take(&mut self.pending), self.pending_bytes);
        self.pending_bytes = 0;
        let n = inputs.len() as u64;
        let sent = match self.tx.try_send(Message::Batch(inputs, bytes)) {
            Ok(()) => true,
            Err(TrySendError::Full(message)) => {
                self.shared.waits.fetch_add(1, Ordering::Relaxed);
                self.tx.send(message).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        };
        if !sent {
            // The engine thread is gone (it panicked): nothing waits, the inputs are lost to
            // the SLIs (the spans themselves flow on).
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.lost.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Batches that found the hand-off full and waited for the engine thread, since start.
    pub fn waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }
}

impl Drop for SliFeed {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A snapshot kept for readers: the latest built (with when), whether a build is under way,
/// and a wake-up for readers that have nothing to take until it ends.
struct Slot<T> {
    state: std::sync::Mutex<SlotState<T>>,
    built: tokio::sync::Notify,
}

struct SlotState<T> {
    kept: Option<(Instant, Arc<T>)>,
    building: bool,
    /// The engine's thread stopped: no build will come.
    gone: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new(SlotState {
                kept: None,
                building: false,
                gone: false,
            }),
            built: tokio::sync::Notify::new(),
        }
    }
}

/// The readers' end: jobs on the engine thread, and snapshots of what they build.
#[derive(Clone)]
pub struct SliReader {
    jobs: Sender<Job>,
    wake: SyncSender<Message>,
    shared: Arc<Shared>,
    clock: fn() -> u64,
    snapshot_max_age: Duration,
    reports: Arc<Slot<Report>>,
    families: Arc<Slot<Vec<Family>>>,
}

impl SliReader {
    /// Runs `f` on the engine thread, after the inputs handed over before the call, and
    /// gives back what it returns; `None` if the engine thread is gone.
    pub async fn with<R, F>(&self, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SliEngine) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |e| {
            let _ = tx.send(f(e));
        }))?;
        rx.await.ok()
    }

    /// [`SliReader::with`] for callers outside an async runtime (start-up, tests, tools).
    pub fn with_blocking<R, F>(&self, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SliEngine) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Box::new(move |e| {
            let _ = tx.send(f(e));
        }))?;
        rx.recv().ok()
    }

    fn submit(&self, job: Job) -> Option<()> {
        self.jobs.send(job).ok()?;
        // Full: the engine is busy with inputs and looks at jobs after each one.
        let _ = self.wake.try_send(Message::Wake);
        Some(())
    }

    /// The report, built at most [`SliReader::snapshot_max_age`] ago.
    pub async fn report(&self) -> Option<Arc<Report>> {
        let clock = self.clock;
        self.snapshot(&self.reports, move |e| e.report(clock()))
            .await
    }

    /// The metric families, built at most [`SliReader::snapshot_max_age`] ago.
    pub async fn families(&self) -> Option<Arc<Vec<Family>>> {
        let clock = self.clock;
        self.snapshot(&self.families, move |e| e.families(clock()))
            .await
    }

    /// The snapshot in `slot` while it is younger than the max age. Past it, one reader
    /// starts a new build on the engine thread and every reader takes the kept snapshot
    /// meanwhile (at most one build's time older than the max age): no reader waits for
    /// the engine except before the first snapshot.
    async fn snapshot<T: Send + Sync + 'static>(
        &self,
        slot: &Arc<Slot<T>>,
        build: impl FnOnce(&mut SliEngine) -> T + Send + 'static,
    ) -> Option<Arc<T>> {
        let mut build = Some(build);
        loop {
            let built = slot.built.notified();
            tokio::pin!(built);
            {
                let mut state = slot.state.lock().ok()?;
                if let Some((at, snapshot)) = &state.kept
                    && at.elapsed() < self.snapshot_max_age
                {
                    return Some(snapshot.clone());
                }
                if state.gone {
                    return None;
                }
                if !state.building
                    && let Some(build) = build.take()
                {
                    state.building = true;
                    let (reader, slot) = (self.clone(), slot.clone());
                    tokio::spawn(async move {
                        let fresh = reader.with(build).await;
                        if let Ok(mut state) = slot.state.lock() {
                            state.building = false;
                            match fresh {
                                Some(v) => state.kept = Some((Instant::now(), Arc::new(v))),
                                None => state.gone = true,
                            }
                        }
                        slot.built.notify_waiters();
                    });
                }
                if let Some((_, stale)) = &state.kept {
                    return Some(stale.clone());
                }
                // Nothing to hand out yet: wait for the build, registered before the lock
                // is let go so its end cannot be missed.
                built.as_mut().enable();
            }
            built.await;
        }
    }

    /// How old a snapshot handed to a reader may be.
    pub fn snapshot_max_age(&self) -> Duration {
        self.snapshot_max_age
    }

    /// The clock the engine's windows run on.
    pub fn clock(&self) -> fn() -> u64 {
        self.clock
    }

    /// Bytes waiting in the hand-off.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }

    /// Batches that found the hand-off full and waited for the engine thread, since start.
    pub fn handoff_waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }

    /// Inputs the engine thread has applied, since start.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Relaxed)
    }

    /// Inputs the span path could not hand over because the engine thread had stopped.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{RootMatch, Scalar, SpanFacts, StatusCode};
    use crate::cuj::{Cuj, Scope, TraceFacts};
    use crate::engine::SliMatcher;

    const START_MS: u64 = 1_800_000_000_000;

    fn clock() -> u64 {
        START_MS
    }

    struct Root;

    impl SpanFacts for Root {
        fn name(&self) -> &str {
            "GET /"
        }
        fn service(&self) -> &str {
            "api"
        }
        fn status(&self) -> StatusCode {
            StatusCode::Unset
        }
        fn attribute(&self, _key: &str) -> Option<Scalar<'_>> {
            None
        }
    }

    /// One CUJ every root matches, no dimensions: one series whose counts are the events.
    fn engine() -> SliEngine {
        SliEngine::new(vec![Cuj {
            name: "all".into(),
            matcher: RootMatch::default(),
            dimensions: Vec::new(),
            max_series: 10,
            scope: Scope::Root,
            bad: Vec::new(),
            exclude: Vec::new(),
            latency: None,
            objectives: Vec::new(),
            alert_gate: crate::slo::AlertGate::OFF,
            runbook: None,
        }])
    }

    fn trace(matcher: &SliMatcher, n: u64) -> MatchedTrace {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&n.to_le_bytes());
        let facts = TraceFacts {
            trace_id,
            root: &Root,
            root_start_ns: START_MS * 1_000_000,
            root_end_ns: START_MS * 1_000_000 + 1_000_000,
            spans: &[],
            last_end_ns: START_MS * 1_000_000 + 1_000_000,
            span_bits: None,
        };
        matcher.match_trace(&facts)
    }

    /// Events recorded, as a report counts them.
    fn events(report: &Report) -> u64 {
        report.cujs[0]
            .series
            .iter()
            .map(|s| s.availability_good.unwrap_or(0) + s.availability_bad.unwrap_or(0))
            .sum()
    }

    /// Feeds `n` traces from a thread of its own (as a shard would), more than the
    /// hand-off holds, and waits for it.
    fn feed_from_a_shard(feed: SliFeed, matcher: Arc<SliMatcher>, n: u64) {
        std::thread::spawn(move || {
            let mut feed = feed;
            for i in 0..n {
                feed.trace(trace(&matcher, i), START_MS);
            }
        })
        .join()
        .expect("the feeding thread ends");
    }

    #[test]
    fn a_job_sees_every_input_handed_over_before_it() {
        let engine = engine();
        let matcher = engine.matcher();
        let (feed, reader) = spawn(engine, clock, Duration::ZERO).expect("thread");
        let n = 3 * HANDOFF_CAPACITY as u64;
        feed_from_a_shard(feed, matcher, n);
        let report = reader
            .with_blocking(|e| e.report(START_MS))
            .expect("the engine's thread answers");
        assert_eq!(events(&report), n);
        assert_eq!(reader.applied(), n);
        assert_eq!(reader.queued_bytes(), 0, "nothing is left counted");
    }

    #[tokio::test]
    async fn ingestion_goes_on_while_a_reader_holds_a_report() {
        let engine = engine();
        let matcher = engine.matcher();
        let (feed, reader) = spawn(engine, clock, Duration::from_secs(3600)).expect("thread");
        let held = reader.report().await.expect("a report");
        assert_eq!(events(&held), 0);
        // Three times what the hand-off holds, while the report is held: had the reader
        // held up the engine, the shard would wait here for good.
        let n = 3 * HANDOFF_CAPACITY as u64;
        let shard = {
            let matcher = matcher.clone();
            tokio::task::spawn_blocking(move || feed_from_a_shard(feed, matcher, n))
        };
        tokio::time::timeout(Duration::from_secs(60), shard)
            .await
            .expect("the shard handed everything over while the report was held")
            .expect("the shard's task");
        let now = reader
            .with(|e| e.report(START_MS))
            .await
            .expect("the engine's thread answers");
        assert_eq!(events(&now), n);
        // Within its max age the snapshot is handed out again, unchanged.
        let again = reader.report().await.expect("a report");
        assert!(Arc::ptr_eq(&held, &again));
        assert_eq!(events(&held), 0);
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_handed_out_while_the_engine_is_busy() {
        let (_feed, reader) = spawn(engine(), clock, Duration::ZERO).expect("thread");
        let first = reader.report().await.expect("the first report, built");
        // The engine thread is held by a job until `release` says.
        let (release, held) = mpsc::channel::<()>();
        let busy = reader.clone();
        let job = tokio::spawn(async move { busy.with(move |_| held.recv().is_ok()).await });
        // Stale at once (max age zero): a rebuild is asked for, and the kept one handed out
        // meanwhile; had the reader waited for the busy engine, this would time out.
        let stale = tokio::time::timeout(Duration::from_secs(30), reader.report())
            .await
            .expect("the reader did not wait for the engine")
            .expect("a report");
        assert!(Arc::ptr_eq(&first, &stale));
        release.send(()).expect("the job waits");
        assert_eq!(job.await.expect("job task"), Some(true));
        // Once the engine is free, the rebuild lands and the next reader takes it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = reader.report().await.expect("a report");
            if !Arc::ptr_eq(&first, &now) {
                break;
            }
            assert!(Instant::now() < deadline, "the rebuild never landed");
            tokio::task::yield_now().await;
        }
    }
}
