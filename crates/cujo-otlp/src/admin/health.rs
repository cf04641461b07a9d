//! Liveness of the pipeline's stages, behind `/healthz` and `cujo_stage_up`.
//!
//! Each long-running stage (a receiver's listener, an assembler shard, the exporter, the
//! SLI engine's thread) runs under a name registered here. A stage that panics, or ends
//! while cujo is not shutting down, is marked failed and stays failed: spans routed to it
//! would wait for nothing, so the process is no longer healthy and the orchestrator should
//! restart it (`/healthz` answers 503 naming the stage). Once shutdown starts
//! ([`Health::stopping`]), stages ending is expected; a panic still counts.
//!
//! Answers name the stage and what happened to it, never the panic's message (which the
//! panic hook has already logged, and which an unauthenticated probe has no business
//! reading).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;

use crate::prom;

/// What became of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    Running,
    /// Ended normally, during shutdown.
    Finished,
    /// Ended while cujo was not shutting down.
    Stopped,
    Panicked,
}

impl StageState {
    fn failed(self) -> bool {
        matches!(self, Self::Stopped | Self::Panicked)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Stopped => "stopped",
            Self::Panicked => "panicked",
        }
    }
}

/// The stages of one process and whether each still runs. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Health(Arc<Inner>);

#[derive(Default)]
struct Inner {
    stages: Mutex<Vec<(String, StageState)>>,
    stopping: AtomicBool,
}

impl Health {
    /// Registers a stage by `name` (unique per process, e.g. `assembler-3`) as running.
    pub fn register(&self, name: impl Into<String>) -> Stage {
        let mut stages = self.0.stages.lock().unwrap_or_else(PoisonError::into_inner);
        stages.push((name.into(), StageState::Running));
        Stage {
            health: self.clone(),
            index: stages.len() - 1,
            settled: false,
        }
    }

    /// Runs `future` as the stage `name` on the runtime: its panic or its end outside
    /// shutdown marks the stage failed. The handle answers as `tokio::spawn`'s does (a panic
    /// is still the `JoinError` it was).
    pub fn spawn<F>(&self, name: impl Into<String>, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let stage = self.register(name);
        tokio::spawn(stage.run(future))
    }

    /// Shutdown has begun: stages that end from now on end as expected.
    pub fn stopping(&self) {
        self.0.stopping.store(true, Ordering::Release);
    }

    /// The stages that failed, with what happened to each, in registration order.
    pub fn failures(&self) -> Vec<(String, StageState)> {
        self.0
            .stages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, state)| state.failed())
            .cloned()
            .collect()
    }

    /// `cujo_stage_up{stage}`: 1 while a stage runs (or finished at shutdown), 0 once it
    /// failed.
    pub fn render(&self, out: &mut prom::Exposition) {
        let stages = self.0.stages.lock().unwrap_or_else(PoisonError::into_inner);
        let mut family = prom::Family::gauge(
            out,
            "cujo_stage_up",
            "Whether a pipeline stage runs (1) or has stopped or panicked outside shutdown (0); /healthz fails while any is 0.",
        );
        for (name, state) in stages.iter() {
            family.sample(&[("stage", name)], if state.failed() { 0.0 } else { 1.0 });
        }
    }

    fn settle(&self, index: usize, state: StageState) {
        let state = match state {
            StageState::Finished if !self.0.stopping.load(Ordering::Acquire) => StageState::Stopped,
            other => other,
        };
        let name = {
            let mut stages = self.0.stages.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = stages.get_mut(index) else {
                return;
            };
            entry.1 = state;
            entry.0.clone()
        };
        if state.failed() {
            tracing::error!(
                stage = %name,
                state = state.as_str(),
                "a pipeline stage is no longer running: /healthz answers 503 until cujo is restarted"
            );
        }
    }
}

/// A registered stage; settle it with [`Stage::finished`] or [`Stage::panicked`], or let it
/// drop (counted as ended: failed unless shutting down).
pub struct Stage {
    health: Health,
    index: usize,
    settled: bool,
}

impl Stage {
    /// Runs `future` to its end as this stage.
    pub async fn run<F: Future>(self, future: F) -> F::Output {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(output) => {
                self.finished();
                output
            }
            Err(panic) => {
                self.panicked();
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// The stage ended on its own (failed unless shutdown has begun).
    pub fn finished(mut self) {
        self.settle(StageState::Finished);
    }

    /// The stage panicked.
    pub fn panicked(mut self) {
        self.settle(StageState::Panicked);
    }

    fn settle(&mut self, state: StageState) {
        if !self.settled {
            self.settled = true;
            self.health.settle(self.index, state);
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let state = if std::thread::panicking() {
            StageState::Panicked
        } else {
            StageState::Finished
        };
        self.settle(state);
    }
}

/// The text of a `/healthz` answer: `Ok` with "ok", or `Err` naming each failed stage.
pub fn answer(health: &Health) -> Result<String, String> {
    let failures = health.failures();
    if failures.is_empty() {
        return Ok("ok\n".into());
    }
    let mut text = String::from("unhealthy:");
    for (name, state) in failures {
        text.push_str(&format!(" {name} {}", state.as_str()));
        text.push(';');
    }
    text.pop();
    text.push('\n');
    Err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_fails_its_stage_and_keeps_its_join_error() {
        let health = Health::default();
        let quiet = health.spawn("exporter", async { 7 });
        let loud = health.spawn("assembler-1", async {
            tokio::task::yield_now().await;
            panic!("a bug");
        });
        assert_eq!(quiet.await.ok(), Some(7));
        let err = loud.await.expect_err("the panic reaches the handle");
        assert!(err.is_panic());
        // "exporter" ended outside shutdown too: both are failures, in registration order.
        assert_eq!(
            health.failures(),
            vec![
                ("exporter".to_string(), StageState::Stopped),
                ("assembler-1".to_string(), StageState::Panicked),
            ]
        );
        assert_eq!(
            answer(&health).expect_err("unhealthy"),
            "unhealthy: exporter stopped; assembler-1 panicked\n"
        );
    }

    #[tokio::test]
    async fn stages_ending_at_shutdown_are_expected_but_a_panic_still_counts() {
        let health = Health::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stage = health.spawn("otlp-grpc", async move {
            let _ = rx.await;
        });
        let running = health.register("sli-engine");
        assert_eq!(answer(&health), Ok("ok\n".into()));
        health.stopping();
        let _ = tx.send(());
        stage.await.expect("ends");
        assert_eq!(answer(&health), Ok("ok\n".into()));
        let late = tokio::spawn(running.run(async { panic!("late") }));
        assert!(late.await.expect_err("panicked").is_panic());
        assert_eq!(
            health.failures(),
            vec![("sli-engine".to_string(), StageState::Panicked)]
        );
    }

    #[test]
    fn a_dropped_stage_outside_shutdown_is_stopped_and_metrics_say_so() {
        let health = Health::default();
        let _up = health.register("exporter");
        drop(health.register("admin"));
        let mut out = prom::Exposition::new(prom::Format::Prometheus);
        health.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains("cujo_stage_up{stage=\"exporter\"} 1"),
            "{text}"
        );
        assert!(text.contains("cujo_stage_up{stage=\"admin\"} 0"), "{text}");
    }

    #[tokio::test]
    async fn healthz_answers_503_naming_the_failed_stage_while_readyz_is_unchanged() {
        use tower::ServiceExt;

        let health = Health::default();
        let readiness = super::super::Readiness::default();
        readiness.set(true);
        let router = super::super::router(
            Vec::new(),
            Vec::new(),
            readiness,
            health.clone(),
            super::super::MetricsAccess::default(),
        );
        let get = |path: &str| {
            let request = http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.expect("answer");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .expect("body");
                (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
            }
        };
        let exporter = health.register("exporter");
        assert_eq!(get("/healthz").await, (200, "ok\n".into()));
        exporter.panicked();
        assert_eq!(
            get("/healthz").await,
            (503, "unhealthy: exporter panicked\n".into())
        );
        assert_eq!(get("/readyz").await.0, 200, "readiness is its own answer");
    }
}
