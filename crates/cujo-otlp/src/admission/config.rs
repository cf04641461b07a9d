//! `admission:`: the memory budget, how it is split between the components, and the delay
//! suggested to refused clients; its `validate`, and the [`Shares`] it resolves into.

use std::time::Duration;

/// A fraction: `0.25` or `25%` (shared by every section that takes one).
pub use cujo_config::Fraction;
use cujo_config::{ByteSize, HumanDuration, KeyError, fail};
use serde::Deserialize;

use crate::memory::{Component, Shares};

/// `admission:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// The memory budget: every byte that grows with input (request bodies, held traces, the
    /// root cache, the exporter queue, SLI series and settling events) is counted against it.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: ByteSize,
    /// Delay suggested to refused clients (gRPC RetryInfo, HTTP Retry-After).
    #[serde(default = "default_retry_after")]
    pub retry_after: HumanDuration,
    /// How the budget is split between the components; unset ones share what the set ones
    /// leave, by their default weights.
    #[serde(default)]
    pub shares: SharesConfig,
    /// Whether the allocator may use transparent huge pages (2 MiB): `auto` (the default)
    /// allows them from a 256 MiB budget up (a gateway's large heap), not below (a sidecar,
    /// whose resident set they tripled: each partly used 2 MiB region is resident whole).
    #[serde(default)]
    pub huge_pages: HugePages,
}

/// `admission.huge_pages`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HugePages {
    #[default]
    Auto,
    On,
    Off,
}

/// From this budget up, `huge_pages: auto` allows transparent huge pages.
pub const HUGE_PAGES_FROM: u64 = 256 << 20;

impl AdmissionConfig {
    /// Whether transparent huge pages are allowed (see [`AdmissionConfig::huge_pages`]).
    pub fn allows_huge_pages(&self) -> bool {
        match self.huge_pages {
            HugePages::On => true,
            HugePages::Off => false,
            HugePages::Auto => self.max_in_flight.0 >= HUGE_PAGES_FROM,
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            retry_after: default_retry_after(),
            shares: SharesConfig::default(),
            huge_pages: HugePages::Auto,
        }
    }
}

fn default_max_in_flight() -> ByteSize {
    ByteSize(256 * 1024 * 1024)
}

fn default_retry_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl AdmissionConfig {
    /// A budget, and shares that add up to at most 1 (`key` is `admission`). Whether the
    /// receivers' share holds their largest request needs the receivers' section too: the
    /// binary checks that.
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if self.max_in_flight.0 == 0 {
            return fail(format!("{key}.max_in_flight"), "must be greater than zero");
        }
        self.shares.validate(&format!("{key}.shares"))
    }
}

/// `admission.shares`: each component's fraction of `admission.max_in_flight` (0 to 1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesConfig {
    pub receivers: Option<Fraction>,
    pub assembler: Option<Fraction>,
    pub root_cache: Option<Fraction>,
    pub exporter: Option<Fraction>,
    pub sli: Option<Fraction>,
}

impl SharesConfig {
    /// The shares set add up to at most 1 (`key` is `admission.shares`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let set: f64 = self.set().iter().filter_map(|(_, f)| f.map(|f| f.0)).sum();
        if set > 1.0 + 1e-9 {
            return fail(
                key,
                format!("the shares add up to {set:.3}; they must add up to at most 1"),
            );
        }
        Ok(())
    }

    /// The split: the shares set, and what they leave given to the others in proportion to
    /// `defaults` (the split for the stages that run, [`Shares::for_stages`]).
    pub fn resolve(&self, defaults: Shares) -> Shares {
        let set = self.set();
        let fixed: f64 = set.iter().filter_map(|(_, f)| f.map(|f| f.0)).sum();
        let free_weight: f64 = set
            .iter()
            .filter(|(_, f)| f.is_none())
            .map(|(c, _)| defaults.of(*c))
            .sum();
        let left = (1.0 - fixed).max(0.0);
        let mut out = [0.0; 5];
        for (c, f) in set {
            out[c as usize] = match f {
                Some(f) => f.0,
                None if free_weight > 0.0 => defaults.of(c) / free_weight * left,
                None => 0.0,
            };
        }
        Shares(out)
    }

    fn set(&self) -> [(Component, Option<Fraction>); 5] {
        [
            (Component::Receivers, self.receivers),
            (Component::Assembler, self.assembler),
            (Component::RootCache, self.root_cache),
            (Component::Exporter, self.exporter),
            (Component::Sli, self.sli),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AdmissionConfig, String> {
        let c: AdmissionConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("admission").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_fractions() {
        let c = parse("{}").expect("empty section");
        assert_eq!(c.max_in_flight, ByteSize(256 << 20));
        assert_eq!(c.retry_after.0, Duration::from_secs(1));
        let c =
            parse("shares: { receivers: 25%, exporter: 0.5, sli: \" 10 % \" }").expect("parses");
        let s = &c.shares;
        assert_eq!(
            (s.receivers, s.exporter, s.sli, s.assembler),
            (
                Some(Fraction(0.25)),
                Some(Fraction(0.5)),
                Some(Fraction(0.1)),
                None
            )
        );
        for (yaml, want) in [
            (
                "shares: { sli: 150% }",
                "expected a fraction between 0 and 1",
            ),
            (
                "shares: { sli: -0.1 }",
                "expected a fraction between 0 and 1",
            ),
            (
                "shares: { sli: most }",
                "expected a fraction like 0.25 or 25%",
            ),
            (
                "shares: { receivers: 0.6, exporter: 60% }",
                "admission.shares: the shares add up to 1.200; they must add up to at most 1",
            ),
            (
                "max_in_flight: 0",
                "admission.max_in_flight: must be greater than zero",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn unset_shares_split_what_the_set_ones_leave_by_the_defaults() {
        let defaults = Shares::for_stages(true, true);
        let none = SharesConfig::default().resolve(defaults);
        for (got, want) in none.0.iter().zip(defaults.0) {
            assert!((got - want).abs() < 1e-9, "{none:?}");
        }
        let c = parse("shares: { receivers: 0.5 }").expect("parses");
        let s = c.shares.resolve(defaults);
        assert_eq!(s.of(Component::Receivers), 0.5);
        let others = [
            Component::Assembler,
            Component::RootCache,
            Component::Exporter,
            Component::Sli,
        ];
        let left: f64 = others.iter().map(|c| s.of(*c)).sum();
        assert!((left - 0.5).abs() < 1e-9, "{s:?}");
        // In proportion: the exporter's default weight is three times the root cache's.
        let ratio = s.of(Component::Exporter) / s.of(Component::RootCache);
        assert!((ratio - 3.0).abs() < 1e-9, "{s:?}");
        // Without an assembler its share, unless set, is nothing.
        let plain = SharesConfig::default().resolve(Shares::for_stages(false, false));
        assert_eq!(plain.of(Component::Assembler), 0.0);
    }
}
