//! `exporters.prometheus`: where the admin listener (`/metrics`, `/healthz`, `/readyz`, and
//! the SLO surfaces merged onto it) listens, the tokens its routes require and which routes
//! are on.

use cujo_config::{Endpoint, KeyError};
use serde::Deserialize;

use super::AdminRoutes;
use crate::auth::AuthConfig;

/// `exporters.prometheus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporter {
    pub endpoint: Endpoint,
    /// Bearer tokens the status page and the APIs (JSON and gRPC) require.
    pub auth: Option<AuthConfig>,
    /// Bearer tokens `/metrics` requires: a scraper's own, which opens nothing else.
    pub metrics_auth: Option<AuthConfig>,
    #[serde(default)]
    pub routes: AdminRoutes,
}

impl PrometheusExporter {
    /// `auth`, then `metrics_auth` (the endpoint and routes were checked by parsing).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{key}.auth"))?;
        }
        if let Some(auth) = &self.metrics_auth {
            auth.validate(&format!("{key}.metrics_auth"))?;
        }
        Ok(())
    }
}
