//! `notifications:`: how often alerts are evaluated and which webhooks receive them.

use std::time::Duration;

use cujo_config::outbound::{self, TlsConfig};
use cujo_config::{HumanDuration, KeyError, fail};
use serde::Deserialize;

/// `notifications:` — where burn-rate alert transitions are posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// How often the objectives are evaluated for alert transitions.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: HumanDuration,
    /// How long an alert must stay clear before `resolved` is sent; firing again within it
    /// continues the same alert (no notification), so a flapping alert does not spam.
    #[serde(default = "default_resolve_delay")]
    pub resolve_delay: HumanDuration,
    /// `cujo_instance` in notifications; default `$HOSTNAME` (the pod name), else the host name.
    pub instance: Option<String>,
    /// The status page as the on-call reaches it (through an ingress or a proxy): each
    /// notification links to its CUJ's section there.
    pub page_url: Option<String>,
    pub webhooks: Vec<WebhookConfig>,
}

fn default_evaluation_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_resolve_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// One webhook receiving alert transitions. `Debug` leaves the URL out (a secret).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the webhook in logs and in `cujo_notifications_total{webhook}`.
    pub name: String,
    /// A secret (a Slack webhook URL is its own credential): never logged.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which alerts this webhook receives.
    #[serde(default = "default_severities")]
    pub severities: Vec<AlertSeverity>,
    #[serde(default)]
    pub headers: cujo_config::outbound::Headers,
    /// Deadline of one attempt.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: HumanDuration,
    /// Attempts after the first on 5xx, 429, timeouts and connection errors.
    #[serde(default = "default_webhook_retries")]
    pub max_retries: u32,
    #[serde(default)]
    pub tls: TlsConfig,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .field("format", &self.format)
            .field("severities", &self.severities)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Slack incoming-webhook JSON (`text` plus blocks).
    Slack,
    /// cujo's own JSON body (README, "Notifications").
    #[default]
    Generic,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    Page,
    Ticket,
}

fn default_severities() -> Vec<AlertSeverity> {
    vec![AlertSeverity::Page, AlertSeverity::Ticket]
}

fn default_webhook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_webhook_retries() -> u32 {
    5
}

impl NotificationsConfig {
    /// No webhooks, the default timings: alert transitions are evaluated and logged only
    /// (what runs without `notifications:`).
    pub fn log_only() -> Self {
        Self {
            evaluation_interval: default_evaluation_interval(),
            resolve_delay: default_resolve_delay(),
            instance: None,
            page_url: None,
            webhooks: Vec::new(),
        }
    }

    /// A usable interval and instance, at least one webhook, each valid and uniquely named.
    /// `key` is where the section is (`notifications`). That alerts need CUJs is the
    /// binary's check: it knows both sections.
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if self.evaluation_interval.0 < Duration::from_millis(10) {
            return fail(
                format!("{key}.evaluation_interval"),
                "must be at least 10ms",
            );
        }
        if self
            .instance
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return fail(format!("{key}.instance"), "must not be empty");
        }
        if let Some(url) = &self.page_url {
            outbound::check_url(&format!("{key}.page_url"), url, "https://cujo.example.com/")?;
        }
        if self.webhooks.is_empty() {
            return fail(
                format!("{key}.webhooks"),
                "expected at least one webhook (name, url)",
            );
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("{key}.webhooks[{i}]");
            if self.webhooks[..i].iter().any(|o| o.name == w.name) && w.name_is_valid() {
                return fail(
                    format!("{at}.name"),
                    format!("{:?} is used by another webhook", w.name),
                );
            }
            w.validate(&at)?;
        }
        Ok(())
    }
}

impl WebhookConfig {
    fn name_is_valid(&self) -> bool {
        !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }

    /// A label-safe name, an `http(s)://` URL with a host, severities, headers, a timeout.
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let at = |k: &str| format!("{key}.{k}");
        if !self.name_is_valid() {
            return fail(
                at("name"),
                format!(
                    "{:?}: expected a name of letters, digits, '-', '_' or '.' like \"slack-oncall\"",
                    self.name
                ),
            );
        }
        outbound::check_url(
            &at("url"),
            &self.url,
            "https://hooks.slack.com/services/...",
        )?;
        if self.severities.is_empty() {
            return fail(
                at("severities"),
                "expected page, ticket or both (leave it out for both)",
            );
        }
        outbound::check_headers(&at("headers"), &self.headers)?;
        if self.timeout.0.is_zero() {
            return fail(at("timeout"), "must be greater than zero");
        }
        Ok(())
    }
}
