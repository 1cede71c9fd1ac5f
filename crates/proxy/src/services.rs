//! Built-in service presets and service resolution.
//!
//! A gateway request `/{service}/rest` goes to the first of: the tenant's own service of
//! that name (`sequester service add`), a `[services.NAME]` of the config file, a preset.

use crate::config::Config;
use sequester_model::{BaseUrl, InjectionRule, ServiceName, TenantId};
use sequester_policy::Snapshot;

/// A resolved service: where requests go and the default injection rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedService {
    pub name: ServiceName,
    pub base_url: BaseUrl,
    pub inject: InjectionRule,
}

/// (name, base URL, default injection rule). The rule is how that provider's SDKs send the
/// key; a secret's own `--inject` overrides it.
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "openai",
        "https://api.openai.com",
        "header:Authorization:Bearer {value}",
    ),
    (
        "anthropic",
        "https://api.anthropic.com",
        "header:x-api-key:{value}",
    ),
    (
        "github",
        "https://api.github.com",
        "header:Authorization:Bearer {value}",
    ),
    (
        "stripe",
        "https://api.stripe.com",
        "header:Authorization:Bearer {value}",
    ),
    (
        "slack",
        "https://slack.com/api",
        "header:Authorization:Bearer {value}",
    ),
    (
        "google",
        "https://generativelanguage.googleapis.com",
        "header:x-goog-api-key:{value}",
    ),
    ("googleapis", "https://www.googleapis.com", "query:key"),
];

fn preset(name: &ServiceName) -> Option<ResolvedService> {
    let (_, url, rule) = PRESETS.iter().find(|(n, _, _)| *n == name.as_str())?;
    Some(ResolvedService {
        name: name.clone(),
        base_url: BaseUrl::parse(url).ok()?,
        inject: InjectionRule::parse(rule).ok()?,
    })
}

/// Finds `name` for `tenant`: the tenant's service, then the config file's, then a preset.
pub fn resolve(
    snapshot: &Snapshot,
    config: &Config,
    tenant: &TenantId,
    name: &ServiceName,
) -> Option<ResolvedService> {
    if let Some(s) = snapshot.service(tenant, name) {
        return Some(ResolvedService {
            name: name.clone(),
            base_url: s.base_url.clone(),
            inject: s.injection.clone().unwrap_or_default(),
        });
    }
    if let Some(s) = config.service(name) {
        return Some(ResolvedService {
            name: name.clone(),
            base_url: s.base_url.clone(),
            inject: s.inject.clone().unwrap_or_default(),
        });
    }
    preset(name)
}

/// Every preset, for `sequester service list`.
pub fn presets() -> Vec<ResolvedService> {
    PRESETS
        .iter()
        .filter_map(|(n, _, _)| ServiceName::parse(n).ok().and_then(|n| preset(&n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        assert_eq!(presets().len(), PRESETS.len());
        let openai = presets()
            .into_iter()
            .find(|p| p.name.as_str() == "openai")
            .unwrap();
        assert_eq!(openai.base_url.host(), "api.openai.com");
        assert_eq!(openai.inject, InjectionRule::bearer());
    }
}
