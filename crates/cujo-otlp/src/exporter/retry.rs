//! Exponential backoff that honours the server's own retry delay.

use std::time::{Duration, Instant};

/// `exporters.otlp.retry`.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Give up after this long; zero retries forever.
    pub max_elapsed: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// The schedule of one batch's retries.
pub struct Backoff {
    settings: RetrySettings,
    next: Duration,
    started: Instant,
    seed: u64,
}

impl Backoff {
    pub fn new(settings: RetrySettings, started: Instant) -> Self {
        let seed = started.elapsed().as_nanos() as u64 ^ (&settings as *const _ as u64) | 1;
        Self {
            next: settings.initial_interval,
            settings,
            started,
            seed,
        }
    }

    /// The delay before the next attempt, or `None` if it would pass `max_elapsed`.
    /// A server-given delay (gRPC `RetryInfo`, HTTP `Retry-After`) replaces the computed one.
    pub fn next_delay(&mut self, server_hint: Option<Duration>, now: Instant) -> Option<Duration> {
        let computed = self.jitter(self.next);
        self.next = (self.next * 2).min(self.settings.max_interval);
        let delay = server_hint.unwrap_or(computed);
        let elapsed = now.saturating_duration_since(self.started);
        if !self.settings.max_elapsed.is_zero() && elapsed + delay > self.settings.max_elapsed {
            return None;
        }
        Some(delay)
    }

    /// ±25%, so that many senders refused at once do not retry in lockstep.
    fn jitter(&mut self, d: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.75 + (self.seed % 1000) as f64 / 2000.0;
        d.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stops_at_max_elapsed() {
        let start = Instant::now();
        let settings = RetrySettings {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(2),
        };
        let mut b = Backoff::new(settings, start);
        let d: Vec<Duration> = (0..4).filter_map(|_| b.next_delay(None, start)).collect();
        assert!(d[0] >= Duration::from_millis(75) && d[0] <= Duration::from_millis(125));
        assert!(d[3] >= Duration::from_millis(300) && d[3] <= Duration::from_millis(500));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(5)), start),
            None,
            "a server delay past max_elapsed gives up"
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(700)), start),
            Some(Duration::from_millis(700)),
            "the server's delay wins"
        );
        assert_eq!(b.next_delay(None, start + Duration::from_secs(2)), None);
    }
}
