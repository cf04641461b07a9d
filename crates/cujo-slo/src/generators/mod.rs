//! Generators: files written from the configured CUJs alone (no running cujo), for the
//! systems that compute cujo's SLOs across instances.
//!
//! They take resolved [`cujo_sli::cuj::Cuj`] definitions and the windows and burn-rate
//! factors of `cujo_sli::slo`, so the rules and the in-process evaluation cannot drift
//! apart; they read no engine state and must not invent metric names of their own (they
//! query the families cujo exports).
//!
//! # Layout
//! - [`rules`]: `cujo rules`, Prometheus recording and multiwindow burn-rate alert rules.
//! - [`dashboard`]: `cujo dashboard`, a Grafana dashboard over those rules.

pub mod dashboard;
pub mod rules;
