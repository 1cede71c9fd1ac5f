//! The broker's configuration file (TOML). Unknown keys are errors, never silently ignored.
//!
//! ```toml
//! listen = "127.0.0.1:8787"
//! upstream_ca = "/etc/sequester/internal-ca.pem"   # trusted besides the system roots
//! gateway_hostnames = ["sequester.internal"]       # Host names the gateway answers to
//!
//! [timeouts]          # milliseconds
//! connect = 10000
//! first_byte = 300000
//! idle = 300000
//! audit = 5000        # longest wait for an intent receipt to be durable
//!
//! proxy_listen = "127.0.0.1:8788"                 # the forward proxy (HTTPS_PROXY)
//! no_intercept = ["pinned.example.com"]            # tunnelled blind, never injected into
//! max_inspected_body = 16777216                    # bytes buffered to substitute in bodies
//!
//! [audit]
//! sync = "full"                                    # or "normal": no fsync per commit
//!
//! [egress]
//! default = "allow"                                # or "deny": only what `egress allow` names
//!
//! [services.internal]
//! base_url = "https://api.internal.example/v1"
//! inject = "header:x-api-key:{value}"
//! ```

use sequester_model::{BaseUrl, InjectionRule, ServiceName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot read upstream CA file {path}: {message}")]
    UpstreamCa { path: PathBuf, message: String },
}

impl ConfigError {
    pub fn code(&self) -> sequester_model::ErrorCode {
        match self {
            Self::Read { .. } => sequester_model::ErrorCode::Io,
            Self::Invalid { .. } | Self::UpstreamCa { .. } => {
                sequester_model::ErrorCode::InvalidConfig
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub base_url: BaseUrl,
    #[serde(default)]
    pub inject: Option<InjectionRule>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP + TLS connect to an upstream.
    pub connect: u64,
    /// From sending the request to the upstream's response headers.
    pub first_byte: u64,
    /// Longest silence inside a response body.
    pub idle: u64,
    /// Longest wait for an intent receipt to become durable; past it the request is denied
    /// with `audit_unavailable`.
    pub audit: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: 10_000,
            first_byte: 300_000,
            idle: 300_000,
            audit: 5_000,
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle)
    }
    pub fn audit(&self) -> Duration {
        Duration::from_millis(self.audit)
    }
}

/// The forward proxy's egress default (rules come from `sequester egress`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    /// Destinations no rule names are allowed (private and metadata addresses still are not).
    #[default]
    Allow,
    /// Only destinations an allow rule names.
    Deny,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    #[serde(default)]
    pub default: EgressDefault,
}

/// How durable an intent receipt is before a credential is used.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditSync {
    /// Flushed to stable storage (fsync) before the value is injected.
    #[default]
    Full,
    /// Written to the operating system before the value is injected: survives the broker
    /// being killed, not a power loss; much lower latency on slow disks.
    Normal,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub sync: AuditSync,
}

const fn default_max_inspected_body() -> usize {
    16 * 1024 * 1024
}

/// Everything `serve` can be configured with. Flags override the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub gateway_hostnames: Vec<String>,
    /// Where the forward proxy listens (default 127.0.0.1:8788).
    #[serde(default)]
    pub proxy_listen: Option<String>,
    /// Hosts tunnelled without interception (clients that pin certificates). Nothing is ever
    /// injected into these tunnels.
    #[serde(default)]
    pub no_intercept: Vec<sequester_model::HostPattern>,
    /// Largest request body the forward proxy buffers to replace placeholders in it (only
    /// for agents holding a secret with body substitution); larger ones get `body_too_large`.
    #[serde(default = "default_max_inspected_body")]
    pub max_inspected_body: usize,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: None,
            upstream_ca: None,
            gateway_hostnames: Vec::new(),
            proxy_listen: None,
            no_intercept: Vec::new(),
            max_inspected_body: default_max_inspected_body(),
            egress: EgressConfig::default(),
            audit: AuditConfig::default(),
            timeouts: Timeouts::default(),
            services: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        for name in config.services.keys() {
            ServiceName::parse(name).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("service {name:?}: {e}"),
            })?;
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Config-file services by name.
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceConfig> {
        self.services.get(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c = Config::parse(
            r#"
            listen = "127.0.0.1:9000"
            [timeouts]
            audit = 100
            [services.internal]
            base_url = "https://api.internal.example/v1"
            inject = "header:x-api-key:{value}"
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.timeouts.audit, 100);
        assert_eq!(c.timeouts.connect, 10_000);
        assert_eq!(c.services["internal"].base_url.path(), "/v1");
        for bad in [
            "lisen = \"x\"",
            "[timeouts]\nconect = 1",
            "[services.x]\nbase_url = \"ftp://x\"",
            "[services.x]\nbase_url = \"https://x.com\"\ninject = \"cookie:a\"",
            "[services.\"bad name\"]\nbase_url = \"https://x.com\"",
        ] {
            let err = Config::parse(bad, Path::new("t.toml")).unwrap_err();
            assert_eq!(
                err.code(),
                sequester_model::ErrorCode::InvalidConfig,
                "{bad}"
            );
        }
    }
}
