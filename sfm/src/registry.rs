//! The devices this process may serve: the registrations in the shared
//! store (written by the operator), narrowed in a pod to its Simulation's
//! list. Refreshed on change events and on a timer.

use simcache_core::pod_settings::DeviceRef;
use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use parking_lot::RwLock;
use simcache_crds::sfm::SFMDeviceSpec;
use simcache_store::sfm::{DeviceRow, SfmStore};

use crate::freshness::{Reach, Rules};

/// A registered device as the proxy uses it.
#[derive(Debug, Clone)]
pub struct Device {
    pub conn_key: String,
    /// The SFMDevice object's namespace and name.
    pub namespace: String,
    pub name: String,
    /// `namespace/name`: the metric label and what logs name.
    pub label: String,
    pub uid: String,
    pub spec: SFMDeviceSpec,
    pub rules: Rules,
    /// The `Authorization` header for upstream, from the environment.
    pub authorization: Option<HeaderValue>,
    pub serial: Option<String>,
    pub failures: i64,
    pub unreachable_until_ms: i64,
    pub last_error: Option<String>,
}

impl Device {
    pub fn reach(&self, now_ms: i64) -> Reach {
        if self.spec.suspend {
            Reach::Suspended
        } else if self.failures == 0 {
            Reach::Ok
        } else if now_ms < self.unreachable_until_ms {
            Reach::BackingOff
        } else {
            Reach::ProbeDue
        }
    }

    pub fn backoff_ms(&self) -> i64 {
        self.spec.cache.unreachable_backoff_seconds.max(1) * 1000
    }
}

use simcache_core::pod_env::sfm_authorization_env;

/// Whose credential variable is `env` besides `(namespace, name)`: two
/// devices whose names map to one variable (`team`/`a-x` and `team-a`/`x`)
/// must not get each other's header, so neither gets one.
fn credential_shared<'a>(
    namespace: &str,
    name: &str,
    others: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    let env = sfm_authorization_env(namespace, name);
    others
        .into_iter()
        .any(|(ns, n)| (ns, n) != (namespace, name) && sfm_authorization_env(ns, n) == env)
}

fn device_from_row(r: &DeviceRow, credential_shared: bool) -> Option<Device> {
    let spec: SFMDeviceSpec = match serde_json::from_str(&r.settings) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(conn_key = %r.conn_key, error = %e, "ignoring a registration whose settings do not parse");
            return None;
        }
    };
    if credential_shared {
        tracing::error!(device = %format!("{}/{}", r.namespace, r.name), "another device's name maps to the same credential variable; sending no Authorization header to either");
    }
    let authorization = (!credential_shared)
        .then(|| std::env::var(sfm_authorization_env(&r.namespace, &r.name)).ok())
        .flatten()
        .and_then(|v| HeaderValue::from_str(&v).ok())
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
    Some(Device {
        conn_key: r.conn_key.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        label: format!("{}/{}", r.namespace, r.name),
        uid: r.uid.clone(),
        rules: Rules::from(&spec.cache),
        spec,
        authorization,
        serial: r.serial.clone(),
        failures: r.failures,
        unreachable_until_ms: r.unreachable_until_ms,
        last_error: r.last_error.clone(),
    })
}

pub struct Registry {
    store: SfmStore,
    /// The devices this process may serve (a pod's list); all when `None`.
    allow: Option<Vec<DeviceRef>>,
    devices: RwLock<HashMap<String, Arc<Device>>>,
}

impl Registry {
    pub fn new(store: SfmStore, allow: Option<Vec<DeviceRef>>) -> Self {
        Registry {
            store,
            allow,
            devices: RwLock::new(HashMap::new()),
        }
    }

    fn allowed(&self, d: &Device) -> bool {
        self.allow.as_ref().is_none_or(|a| {
            a.iter()
                .any(|r| r.namespace == d.namespace && r.name == d.name)
        })
    }

    /// The device at `conn_key`, if registered and allowed here.
    pub fn get(&self, conn_key: &str) -> Option<Arc<Device>> {
        self.devices.read().get(conn_key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Device>> {
        self.devices.read().values().cloned().collect()
    }

    /// Reloads every registration. Returns the labels that went away.
    pub async fn reload(&self) -> simcache_store::Result<Vec<String>> {
        let rows = self.store.devices().await?;
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect();
        let fresh: HashMap<String, Arc<Device>> = rows
            .iter()
            .filter_map(|r| {
                device_from_row(
                    r,
                    credential_shared(&r.namespace, &r.name, names.iter().copied()),
                )
            })
            .filter(|d| self.allowed(d))
            .map(|d| (d.conn_key.clone(), Arc::new(d)))
            .collect();
        let mut map = self.devices.write();
        let gone = map
            .values()
            .filter(|d| !fresh.values().any(|f| f.label == d.label))
            .map(|d| d.label.clone())
            .collect();
        *map = fresh;
        Ok(gone)
    }

    /// Reloads one registration (after a change event or our own write).
    pub async fn reload_one(&self, conn_key: &str) -> simcache_store::Result<Option<String>> {
        let row = self.store.device(conn_key).await?;
        let mut map = self.devices.write();
        let d = row
            .as_ref()
            .and_then(|r| {
                let others = map
                    .values()
                    .filter(|d| d.conn_key != conn_key)
                    .map(|d| (d.namespace.as_str(), d.name.as_str()));
                device_from_row(r, credential_shared(&r.namespace, &r.name, others))
            })
            .filter(|d| self.allowed(d));
        match d {
            Some(d) => {
                map.insert(conn_key.to_string(), Arc::new(d));
                Ok(None)
            }
            None => Ok(map.remove(conn_key).map(|d| d.label.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_whose_names_share_a_credential_variable_get_none() {
        let others = [("team-a", "x"), ("lab", "unit-7")];
        assert!(credential_shared("team", "a-x", others), "TEAM_A_X both");
        assert!(!credential_shared("lab", "unit-8", others));
        assert!(
            !credential_shared("lab", "unit-7", others),
            "itself is not another"
        );
    }

    #[test]
    fn authorization_variables_are_named_from_namespace_and_name() {
        assert_eq!(
            sfm_authorization_env("field-ops", "unit-7.a"),
            "SIMCACHE_SFM_AUTHORIZATION_FIELD_OPS_UNIT_7_A"
        );
    }
}
