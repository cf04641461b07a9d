//! `exporters.prometheus`: where the admin listener (`/metrics`, `/healthz`, `/readyz`, and
//! the SLO surfaces merged onto it) listens, the tokens its routes require and which routes
//! are on, and whether it speaks TLS.

use cujo_config::{Endpoint, KeyError};
use serde::Deserialize;

use super::AdminRoutes;
use crate::auth::AuthConfig;
use crate::tls::TlsConfig;

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
    /// Serve TLS on every route (the gRPC status API included); with `client_ca_file`,
    /// scrapers, probes and `cujo status` need a client certificate.
    pub tls: Option<TlsConfig>,
}

impl PrometheusExporter {
    /// `auth`, then `metrics_auth`, then `tls` (the endpoint and routes were checked by
    /// parsing).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{key}.auth"))?;
        }
        if let Some(auth) = &self.metrics_auth {
            auth.validate(&format!("{key}.metrics_auth"))?;
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{key}.tls"))?;
        }
        Ok(())
    }
}
