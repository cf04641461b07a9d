//! `exporters.prometheus`: where the admin listener (`/metrics`, `/healthz`, `/readyz`, and
//! the SLO surfaces merged onto it) listens.

use cujo_config::{Endpoint, KeyError};
use serde::Deserialize;

/// `exporters.prometheus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporter {
    pub endpoint: Endpoint,
}

impl PrometheusExporter {
    /// Nothing to check beyond what parsing checked (the endpoint is a listen address);
    /// here so that every section is checked the same way.
    pub fn validate(&self, _key: &str) -> Result<(), KeyError> {
        Ok(())
    }
}
