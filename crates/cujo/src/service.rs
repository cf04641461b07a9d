//! Wiring: builds the stages from a [`Config`], runs them, and shuts them down in order —
//! receivers stop accepting, what they accepted drains to the exporter, the exporter flushes
//! (bounded by `shutdown.timeout`), then the admin listener closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cujo_otlp::admin::health::Health;
use cujo_otlp::admin::{self, MetricsSource, Readiness, SnapshotSource};
use cujo_otlp::admission::SpanSink;
use cujo_otlp::auth::BearerAuth;
use cujo_otlp::exporter;
use cujo_otlp::memory::{Component, MemoryBudget};
use cujo_otlp::prom::Exposition;
use cujo_otlp::receiver::{self, Ingest, ReceiverLimits};
use cujo_otlp::server::{self, ServerLimits};
use cujo_otlp::telemetry::{DropReason, PipelineTelemetry};
use cujo_otlp::tenants::Tenants;
use cujo_otlp::tls::{ServerTls, TlsConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::assembly;
use crate::config::Config;
use cujo_assembler::{Assembler, Directory};
use cujo_sli::engine::{SliEngine, SliMatcher};
use cujo_sli::observer::SliObserver;
use cujo_sli::processor::{SliFeed, SliReader};
use cujo_slo::exporters::{self as slo_exporters, otlp_metrics, webhooks};
use cujo_slo::surfaces::status;

/// Without an assembler the exporter reads the receivers' channel directly and closes it
/// when the receivers are done.
fn exporter_input_closed_by(
    receivers_done: &CancellationToken,
    exporter_input_closed: &CancellationToken,
) {
    let (done, closed) = (receivers_done.clone(), exporter_input_closed.clone());
    tokio::spawn(async move {
        done.cancelled().await;
        closed.cancel();
    });
}

/// Accepted requests the hand-off channel holds; memory is bounded by admission bytes.
const SINK_CAPACITY: usize = 4096;
/// Released batches waiting between the assembler and the exporter.
const ASSEMBLER_OUTPUT_CAPACITY: usize = 64;
/// How long open connections get to finish their requests once shutdown starts.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// How old a report or metric families snapshot of the SLI engine handed to a reader (the
/// page, the APIs, `/metrics`) may be before it is built again: readers polling many times
/// a second cost the engine one build per period each, and what they show is never older
/// than this plus one build (the kept snapshot is handed out while the next is made). Over
/// the load benchmark's 10,010 series, a build every second of both the report and the
/// families took about a tenth of a core from a CPU-bound pipeline; every two seconds, half.
const SLI_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

/// How long queued alert notifications get for a last attempt once shutdown starts.
const NOTIFICATION_DRAIN: Duration = Duration::from_secs(5);

/// What a run ended with, for the final log line and for tests.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub accepted: u64,
    pub exported: u64,
    pub dropped: u64,
    pub in_flight: u64,
}

/// Runs cujo until `stop` resolves, then shuts down in order.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> anyhow::Result<Summary> {
    let telemetry = Arc::new(PipelineTelemetry::new());
    let budget = MemoryBudget::new(
        config.admission.max_in_flight.0 as usize,
        config.memory_shares(),
    );
    tracing::info!(
        budget = budget.total(),
        receivers = budget.limit(Component::Receivers),
        assembler = budget.limit(Component::Assembler),
        root_cache = budget.limit(Component::RootCache),
        exporter = budget.limit(Component::Exporter),
        sli = budget.limit(Component::Sli),
        "memory budget (admission.max_in_flight) and its shares, in bytes"
    );
    crate::allocator::govern(&budget);
    let readiness = Readiness::default();
    // Each long-running stage runs under its name: one that panics or ends before shutdown
    // turns /healthz unhealthy.
    let health = Health::default();

    let receivers_stop = CancellationToken::new();
    // Cancelled once the receivers are done: the stage after them drains and ends, and
    // each later stage ends when its input channel closes.
    let receivers_done = CancellationToken::new();
    let exporter_input_closed = CancellationToken::new();
    let abandon = CancellationToken::new();
    let admin_stop = CancellationToken::new();

    // The assembler, when configured, sits between the receivers and the exporter: one
    // shard per core, each owning the traces whose ids map to it.
    let shards = if config.assembler_enabled() {
        assembly::shard_count(&config)
    } else {
        1
    };
    let (sink, mut receiver_outputs) =
        SpanSink::sharded(SINK_CAPACITY, shards, cujo_assembler::directory::shard_of);
    let assembler_stats: assembly::SharedStats =
        Arc::new(std::sync::Mutex::new(vec![Default::default(); shards]));
    // The SLI engine runs on a thread of its own: shards match their released traces and
    // hand the events over (`SliFeed`); readers ask for snapshots (`SliReader`).
    let mut sli: Option<(Arc<SliMatcher>, SliFeed)> = None;
    let mut sli_reader: Option<SliReader> = None;
    let mut restored_alerts = Vec::new();
    let mut replay_guard = None;
    let (source, assembler_tasks) = if config.assembler_enabled() {
        let (to_exporter, source) = SpanSink::channel(ASSEMBLER_OUTPUT_CAPACITY);
        let settings = assembly::settings(&config, &budget);
        tracing::info!(
            decision_wait = ?settings.decision_wait,
            attributes = ?settings.propagate.attributes,
            shards,
            "propagating root attributes"
        );
        let cujs = config.cujs();
        if !cujs.is_empty() {
            tracing::info!(cujs = cujs.len(), "deriving CUJ SLIs from released traces");
            let mut engine = SliEngine::new(cujs)
                .with_settle(config.slo.settle.0, config.slo.max_settling_traces)
                .with_limits(config.slo.limits(budget.limit(Component::Sli)))
                .with_trace_link(config.slo.trace_link());
            engine.set_counting_since(assembly::wall_clock_ms());
            // With a write-ahead log and a state file, an event counted before a crash and
            // saved must not count again when its requests are replayed.
            if config.wal.is_some() && config.slo.state_file.is_some() {
                replay_guard = Some(engine.guard_replays());
            }
            if let Some(path) = &config.slo.state_file {
                restored_alerts = assembly::load_sli_state(&mut engine, path);
            }
            let matcher = engine.matcher();
            let (feed, reader) =
                cujo_sli::processor::spawn(engine, assembly::wall_clock_ms, SLI_SNAPSHOT_MAX_AGE)
                    .context("cannot start the SLI engine's thread")?;
            sli = Some((matcher, feed));
            sli_reader = Some(reader);
        }
        let directory = Arc::new(Directory::new(
            shards,
            settings.root_cache_ttl.as_millis() as u64,
            settings.root_cache_max_traces,
            settings.root_cache_max_bytes,
        ));
        // Memory limits are for all shards together: each shard gets its share.
        let mut per_shard = settings.clone();
        per_shard.max_buffered_spans = settings.max_buffered_spans.div_ceil(shards);
        per_shard.max_memory_bytes = settings.max_memory_bytes / shards;
        let mut tasks = Vec::with_capacity(shards);
        for (shard, input) in receiver_outputs.drain(..).enumerate() {
            let mut assembler = Assembler::new_shard(per_shard.clone(), directory.clone(), shard);
            if let Some((matcher, feed)) = &sli {
                let mut observer =
                    SliObserver::new(matcher.clone(), feed.clone(), assembly::wall_clock_ms);
                if let Some(guard) = &replay_guard {
                    observer = observer.with_replay_guard(guard.clone());
                }
                assembler.set_observer(Box::new(observer));
            }
            tasks.push(health.spawn(
                format!("assembler-{shard}"),
                assembly::run(
                    assembler,
                    input,
                    to_exporter.clone(),
                    assembly::StageContext {
                        memory: budget.account(Component::Assembler),
                        root_cache_memory: budget.account(Component::RootCache),
                        exporter_memory: budget.account(Component::Exporter),
                        telemetry: telemetry.clone(),
                        stats: assembler_stats.clone(),
                        shard,
                        input_closed: receivers_done.clone(),
                        abandon: abandon.clone(),
                    },
                ),
            ));
        }
        (source, tasks)
    } else {
        exporter_input_closed_by(&receivers_done, &exporter_input_closed);
        let Some(output) = receiver_outputs.pop() else {
            anyhow::bail!("no receiver output channel");
        };
        (output, Vec::new())
    };

    // Exporter (or the discard sink) first, so nothing accepted waits on it.
    let exporter_task = match &config.exporters.otlp {
        Some(otlp) => {
            let downstream = Arc::new(otlp.downstream()?);
            tracing::info!(endpoint = %downstream.display_uri(), "forwarding spans");
            let mut settings = otlp.settings(budget.account(Component::Exporter));
            // The assembler pays for what it releases from the exporter's share.
            settings.input_paid = config.assembler_enabled();
            health.spawn(
                "exporter",
                exporter::run(
                    settings,
                    downstream,
                    telemetry.clone(),
                    source,
                    exporter_input_closed.clone(),
                    abandon.clone(),
                ),
            )
        }
        None => {
            tracing::warn!("no exporters.otlp configured: spans are counted and not forwarded");
            health.spawn(
                "exporter",
                exporter::discard(telemetry.clone(), source, exporter_input_closed.clone()),
            )
        }
    };

    let otlp = config.receivers.otlp.clone().unwrap_or_default();
    let receivers_auth = auth(otlp.auth.as_ref(), "receivers.otlp.auth")?;
    let tenants = tenants(&config, receivers_auth)?;
    // Open connections pay a fixed cost from the receivers' share, beside their bodies.
    let connections = server::ConnectionMemory::new(budget.account(Component::Receivers));
    let retry_after = config.admission.retry_after.0;
    // The write-ahead log, before any receiver: an unusable directory stops cujo here.
    let (wal, replay) = match &config.wal {
        Some(w) => {
            let (wal, replay) = cujo_wal::Wal::open(w.settings()).context("wal")?;
            tracing::info!(directory = %wal.directory().display(), "write-ahead log open: requests are on disk before they are acknowledged");
            (Some(Arc::new(wal)), Some(replay))
        }
        None => (None, None),
    };
    let ingest = |limits: ReceiverLimits| Ingest {
        memory: budget.account(Component::Receivers),
        sink: sink.clone(),
        telemetry: telemetry.clone(),
        limits,
        tenants: tenants.clone(),
        wal: wal.clone(),
    };
    // What was acknowledged before a restart and not exported then goes through the whole
    // pipeline again, before the receivers take new requests.
    let mut replayed_segments = Vec::new();
    if let Some(replay) = replay {
        let started = std::time::Instant::now();
        let replayer = ingest(ReceiverLimits::default());
        let mut done = replayer.replay(replay, &abandon).await;
        replayed_segments = std::mem::take(&mut done.segments);
        let seconds = started.elapsed().as_secs_f64();
        let spans_per_second = if seconds > 0.0 {
            done.spans as f64 / seconds
        } else {
            0.0
        };
        let skipped = done.log;
        if done.unreadable + skipped.lost_records + skipped.corrupt_skips > 0 {
            tracing::warn!(
                records = done.records,
                spans = done.spans,
                unreadable = done.unreadable,
                torn_tails = skipped.lost_records,
                torn_tail_bytes = skipped.lost_bytes,
                damaged_stretches = skipped.corrupt_skips,
                damaged_bytes = skipped.corrupt_bytes,
                seconds,
                spans_per_second,
                "write-ahead log replayed; what could not be read was skipped"
            );
        } else {
            tracing::info!(
                records = done.records,
                spans = done.spans,
                seconds,
                spans_per_second,
                "write-ahead log replayed"
            );
        }
    }
    if let (Some(guard), Some(reader)) = (&replay_guard, &sli_reader) {
        // Once the replayed segments are gone no restored key can come back: the guard
        // is emptied then.
        let restored = guard.is_active();
        reader
            .with(move |e| e.replayed_segments(replayed_segments))
            .await;
        if restored {
            tracing::info!(
                skipped = guard.skipped(),
                "events the restored SLO state counted are not counted again as the log replays them"
            );
        }
    }
    let mut receivers = JoinSet::new();
    // Each listener's TLS, also rendered on /metrics.
    let mut listeners_tls: Vec<ServerTls> = Vec::new();
    if let Some(grpc) = &otlp.grpc {
        let tls = tls(
            grpc.tls.as_ref(),
            "receivers.otlp.grpc.tls",
            "otlp-grpc",
            &mut listeners_tls,
        )?;
        let listener = server::bind(&grpc.endpoint.0)
            .await
            .context("receivers.otlp.grpc.endpoint")?;
        let router =
            receiver::grpc::router(ingest(grpc.receiver_limits(retry_after, &connections)));
        receivers.spawn(health.register("otlp-grpc").run(server::serve(
            "otlp-grpc",
            listener,
            router,
            grpc.server_limits(&connections),
            tls,
            receivers_stop.clone(),
            CONNECTION_DRAIN,
        )));
    }
    if let Some(http) = &otlp.http {
        let tls = tls(
            http.tls.as_ref(),
            "receivers.otlp.http.tls",
            "otlp-http",
            &mut listeners_tls,
        )?;
        let listener = server::bind(&http.endpoint.0)
            .await
            .context("receivers.otlp.http.endpoint")?;
        let router =
            receiver::http::router(ingest(http.receiver_limits(retry_after, &connections)));
        receivers.spawn(health.register("otlp-http").run(server::serve(
            "otlp-http",
            listener,
            router,
            http.server_limits(&connections),
            tls,
            receivers_stop.clone(),
            CONNECTION_DRAIN,
        )));
    }
    if receivers.is_empty() {
        tracing::warn!(
            "no receivers configured (receivers.otlp.grpc / receivers.otlp.http): cujo receives nothing"
        );
    }
    drop(sink);

    // Burn-rate alert transitions, evaluated on their own interval: logged always, posted
    // to the webhooks of `notifications:` when it is set. Not for one replica of a fleet
    // (`slo.fleet`), whose windows hold its share only: the fleet alerts from Prometheus.
    let alert_log = webhooks::NotificationsConfig::log_only();
    let alerts_config = match (&config.notifications, &config.slo.fleet) {
        (Some(n), _) => Some(n),
        (None, None) => Some(&alert_log),
        (None, Some(_)) => None,
    };
    let notifier = match (alerts_config, &sli_reader) {
        (Some(n), Some(reader)) => Some(webhooks::Notifier::start(
            n,
            reader.clone(),
            assembly::wall_clock_ms,
            std::mem::take(&mut restored_alerts),
        )?),
        _ => None,
    };

    let push_telemetry = Arc::new(otlp_metrics::OtlpMetricsTelemetry::default());
    let metrics_push = match (&config.exporters.otlp_metrics, &sli_reader) {
        (Some(cfg), Some(reader)) => Some(otlp_metrics::spawn(
            cfg,
            reader.clone(),
            push_telemetry.clone(),
            assembly::wall_clock_ms,
        )?),
        (Some(_), None) => {
            tracing::warn!(
                "exporters.otlp_metrics is set but no cujs: are configured: nothing to push"
            );
            None
        }
        _ => None,
    };
    let admin_task = match &config.exporters.prometheus {
        Some(prom) => {
            let admin_tls = tls(
                prom.tls.as_ref(),
                "exporters.prometheus.tls",
                "admin",
                &mut listeners_tls,
            )?;
            let listener = server::bind(&prom.endpoint.0)
                .await
                .context("exporters.prometheus.endpoint")?;
            let t = telemetry.clone();
            let b = budget.clone();
            let h = health.clone();
            let mut sources: Vec<MetricsSource> = vec![
                Arc::new(move |out: &mut Exposition| t.render(out)),
                Arc::new(move |out: &mut Exposition| b.render(out)),
                Arc::new(move |out: &mut Exposition| h.render(out)),
                admin::process::source(env!("CARGO_PKG_VERSION")),
            ];
            let mut snapshots: Vec<SnapshotSource> = Vec::new();
            if let Some(reader) = sli_reader.clone() {
                let waits = reader.clone();
                sources.push(Arc::new(move |out: &mut Exposition| {
                    assembly::render_sli_handoff(&waits, out)
                }));
                if let Some(guard) = replay_guard.clone() {
                    sources.push(Arc::new(move |out: &mut Exposition| {
                        assembly::render_replay_guard(&guard, out)
                    }));
                }
                let rendered = Arc::new(assembly::RenderedSli::default());
                snapshots.push(Arc::new(move || {
                    let (reader, rendered) = (reader.clone(), rendered.clone());
                    Box::pin(async move {
                        let families = reader.families().await?;
                        let source: MetricsSource =
                            Arc::new(move |out: &mut Exposition| rendered.append(&families, out));
                        Some(source)
                    })
                }));
            }
            if let Some(tenants) = tenants.clone().filter(|t| t.any()) {
                sources.push(Arc::new(move |out: &mut Exposition| tenants.render(out)));
            }
            if let Some(wal) = &wal {
                let stats = wal.stats().clone();
                sources.push(Arc::new(move |out: &mut Exposition| {
                    receiver::durable::render(&stats, out)
                }));
            }
            if !listeners_tls.is_empty() {
                let listeners = std::mem::take(&mut listeners_tls);
                sources.push(Arc::new(move |out: &mut Exposition| {
                    cujo_otlp::tls::render(&listeners, out)
                }));
            }
            if let (Some(n), Some(_)) = (&notifier, &config.notifications) {
                sources.push(slo_exporters::metrics_source(n.telemetry()));
            }
            if metrics_push.is_some() {
                sources.push(slo_exporters::metrics_source(push_telemetry.clone()));
            }
            if config.assembler_enabled() {
                let stats = assembler_stats.clone();
                sources.push(Arc::new(move |out: &mut Exposition| {
                    if let Ok(s) = stats.lock() {
                        assembly::render(&s, out);
                    }
                }));
            }
            let status_auth = auth(prom.auth.as_ref(), "exporters.prometheus.auth")?;
            let metrics_auth = auth(
                prom.metrics_auth.as_ref(),
                "exporters.prometheus.metrics_auth",
            )?;
            let guards: Vec<_> = [("status", &status_auth), ("metrics", &metrics_auth)]
                .into_iter()
                .filter_map(|(routes, guard)| Some((routes, guard.clone()?)))
                .collect();
            if !guards.is_empty() {
                sources.push(admin::refusals_source(guards));
            }
            let access = admin::MetricsAccess {
                serve: prom.routes.metrics,
                auth: metrics_auth,
            };
            let mut router = admin::router(
                sources,
                snapshots,
                readiness.clone(),
                health.clone(),
                access,
            );
            // Without CUJs the status views still answer, with none.
            let source = status::ReportSource::new(sli_reader.clone(), assembly::wall_clock_ms)
                .in_fleet(config.slo.fleet.as_ref().map(|f| f.prometheus.as_str()));
            let views = status::Views {
                page: prom.routes.status_page,
                api: prom.routes.api,
            };
            let views = status::router(source, views);
            router = router.merge(match status_auth {
                Some(guard) => cujo_otlp::auth::require(views, guard),
                None => views,
            });
            Some(health.spawn(
                "admin",
                server::serve(
                    "admin",
                    listener,
                    router,
                    ServerLimits::default(),
                    admin_tls,
                    admin_stop.clone(),
                    Duration::from_secs(1),
                ),
            ))
        }
        None => None,
    };
    // Each second the engine's memory and what waits in the hand-off to it are written into
    // the SLI's account, so the budget's split on /metrics shows them (the engine keeps
    // itself within that share on its own; its thread ticks itself).
    let sli_weigher = sli_reader.clone().map(|reader| {
        let mut lease = budget.account(Component::Sli).empty_lease();
        let engine = health.register("sli-engine");
        tokio::spawn(async move {
            let mut weigh = tokio::time::interval(Duration::from_secs(1));
            let mut caps = assembly::SliCapReport::default();
            loop {
                weigh.tick().await;
                let Some((bytes, hit)) = reader.with(|e| (e.memory_bytes(), e.caps())).await else {
                    tracing::error!(
                        "the SLI engine's thread stopped (its panic is logged above): SLIs are no longer recorded and the SLO views answer 500; spans still flow"
                    );
                    engine.panicked();
                    return;
                };
                lease.set(bytes + reader.queued_bytes());
                caps.report(hit);
            }
        })
    });
    // Save the SLO windows periodically; once more at shutdown.
    let alerts_notified = notifier.as_ref().map(webhooks::Notifier::alerts);
    let state_saver = match (&sli_reader, &config.slo.state_file) {
        (Some(reader), Some(path)) => {
            let (reader, path) = (reader.clone(), path.clone());
            let alerts = alerts_notified.clone();
            let mut every = config.slo.save_interval.0.max(Duration::from_secs(1));
            if replay_guard.is_some() {
                // Counted events hold their log segments until a save lists them.
                every = every.min(cujo_sli::engine::replay::MAX_UNSAVED);
            }
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    assembly::save_sli_state(&reader, &path, alerts.as_ref(), false).await;
                }
            }))
        }
        _ => None,
    };
    readiness.set(true);
    tracing::info!("cujo is ready");

    stop.await;
    let deadline = config.shutdown.timeout.0;
    tracing::info!(?deadline, "shutting down: no longer accepting spans");
    readiness.set(false);
    health.stopping();
    let abandon_timer = {
        let abandon = abandon.clone();
        let wal = wal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            tracing::warn!("shutdown deadline reached: abandoning what is not yet delivered");
            if let Some(wal) = &wal {
                // What is abandoned now was acknowledged: it stays in the log and is
                // replayed at the next start instead of being lost.
                wal.keep_remaining();
                tracing::warn!(
                    "the write-ahead log keeps what is abandoned: it is replayed at the next start"
                );
            }
            abandon.cancel();
        })
    };
    receivers_stop.cancel();
    while receivers.join_next().await.is_some() {}
    receivers_done.cancel();
    // The assembler ends by itself: after releasing everything, or at the deadline
    // (`abandon`), having counted what it still held.
    for task in assembler_tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "assembler task failed");
        }
    }
    if let Some(saver) = state_saver {
        saver.abort();
    }
    if let Some(weigher) = sli_weigher {
        weigher.abort();
    }
    if let Some(n) = notifier {
        n.stop(NOTIFICATION_DRAIN).await;
    }
    // Nothing more will come: settling events are recorded with what they have.
    // The shards are gone, so everything they handed over is in the engine's queue, which
    // the engine applies before this job.
    drop(sli);
    if let Some(reader) = &sli_reader {
        let now = assembly::wall_clock_ms();
        reader.with(move |e| e.settle_all(now)).await;
    }
    if let (Some(reader), Some(path)) = (&sli_reader, &config.slo.state_file) {
        assembly::save_sli_state(reader, path, alerts_notified.as_ref(), true).await;
    }
    // One last metrics push, within the shutdown deadline.
    if let Some(push) = metrics_push {
        tokio::select! {
            _ = push.finish() => {}
            _ = abandon.cancelled() => tracing::warn!("shutdown deadline passed during the final OTLP metrics push"),
        }
    }
    exporter_input_closed.cancel();
    if let Err(e) = exporter_task.await {
        tracing::error!(error = %e, "exporter task failed");
    }
    // Every span is exported or dropped by now: what the log still holds is what shutdown
    // abandoned (kept for the next start); closing it syncs, deletes what was released and
    // unlocks the directory.
    drop(wal);
    abandon_timer.abort();
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    let summary = Summary {
        accepted: telemetry.accepted_spans(),
        exported: telemetry.exported_spans(),
        dropped: telemetry.dropped_spans_total(),
        in_flight: telemetry.in_flight_spans(),
    };
    tracing::info!(
        accepted = summary.accepted,
        exported = summary.exported,
        dropped = summary.dropped,
        dropped_shutdown = telemetry.dropped_spans(DropReason::Shutdown),
        in_flight = summary.in_flight,
        "cujo stopped"
    );
    Ok(summary)
}

/// The tokens of an `auth:` section (`key`), token files read now; `None` when absent.
fn auth(
    config: Option<&cujo_otlp::auth::AuthConfig>,
    key: &str,
) -> anyhow::Result<Option<BearerAuth>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let auth = BearerAuth::load(config, key)?;
    tracing::info!(key, "requests need a bearer token");
    Ok(Some(auth))
}

/// Who may send and as which tenant: `receivers.otlp.auth`, `tenants:` and
/// `exporters.otlp.pass_headers`; `None` when none is configured (anyone, one tenant).
fn tenants(config: &Config, auth: Option<BearerAuth>) -> anyhow::Result<Option<Arc<Tenants>>> {
    let (pass_headers, pass_max) = config
        .exporters
        .otlp
        .as_ref()
        .map_or((&[][..], 0), |o| (&o.pass_headers[..], o.pass_max_tenants));
    if auth.is_none() && config.tenants.is_empty() && pass_headers.is_empty() {
        return Ok(None);
    }
    let tenants = Tenants::new(&config.tenants, "tenants", auth, pass_headers, pass_max)?;
    if tenants.any() {
        tracing::info!(
            tenants = config.tenants.len(),
            pass_headers = ?pass_headers,
            "spans are batched and sent downstream per tenant"
        );
    }
    Ok(Some(Arc::new(tenants)))
}

/// The TLS of a listener's `tls:` section (`key`), its files read now; `None` when absent.
/// What it counts is rendered on /metrics with the other listeners' (`all`).
fn tls(
    config: Option<&TlsConfig>,
    key: &str,
    listener: &'static str,
    all: &mut Vec<ServerTls>,
) -> anyhow::Result<Option<ServerTls>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let tls = ServerTls::load(config, key, listener)?;
    all.push(tls.clone());
    Ok(Some(tls))
}
