//! Which namespaces the controllers watch: all of them, or a list. The API
//! has no watch over a set of namespaces, so a list is one watch per
//! namespace merged into one stream whose events keep the reflector's
//! contract: a store fed by several watches would otherwise be replaced by
//! whichever namespace listed last (a watch's `InitDone` swaps the whole
//! store). The merge keeps each namespace's objects, emits nothing until
//! every namespace has listed once (so `wait_until_ready` means all of
//! them), and answers a re-list of one namespace with a re-list of the
//! union.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The namespaces the controllers watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// One or more namespaces (no duplicates, never empty).
    Namespaces(Vec<String>),
}

/// A `--watch-namespace` value that cannot name a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--watch-namespace: `{0}` is not a namespace name (lower-case letters, digits and '-', at most 63)"
)]
pub struct NotANamespace(pub String);

impl Scope {
    /// From `--watch-namespace` values (each may hold a comma-separated
    /// list); none means all namespaces.
    pub fn from_flags(values: &[String]) -> Result<Self, NotANamespace> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for v in values.iter().flat_map(|v| v.split(',')) {
            let n = v.trim();
            if n.is_empty() {
                continue;
            }
            if !simcache_crds::fields::is_namespace(n) {
                return Err(NotANamespace(n.to_string()));
            }
            if seen.insert(n.to_string()) {
                out.push(n.to_string());
            }
        }
        Ok(if out.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(out)
        })
    }

    /// Whether an object in `namespace` is in scope.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(ns) => ns.iter().any(|n| n == namespace),
        }
    }
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// The watch events of `K` in `scope`, with the default backoff on each
/// underlying watch.
pub fn watch<K>(client: &Client, scope: &Scope, cfg: watcher::Config) -> Events<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    match scope {
        Scope::All => watcher(Api::<K>::all(client.clone()), cfg),
        Scope::Namespaces(ns) if ns.len() == 1 => {
            watcher(Api::<K>::namespaced(client.clone(), &ns[0]), cfg)
        }
        Scope::Namespaces(ns) => {
            let streams = ns
                .iter()
                .map(|n| {
                    let n2 = n.clone();
                    watcher(Api::<K>::namespaced(client.clone(), n), cfg.clone())
                        .map(move |e| (n2.clone(), e))
                        .boxed()
                })
                .collect::<Vec<_>>();
            merge(ns.len(), stream::select_all(streams).boxed())
        }
    }
}

fn watcher<K>(api: Api<K>, cfg: watcher::Config) -> Events<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, cfg).default_backoff().boxed()
}

/// Per-namespace state of the merge (ordered: a re-list of the union
/// lists namespaces in the same order every time).
struct Merge<K> {
    expected: usize,
    /// Each namespace's objects by name, once it has listed.
    listed: BTreeMap<String, BTreeMap<String, K>>,
    /// A namespace's list in progress.
    listing: BTreeMap<String, BTreeMap<String, K>>,
}

impl<K: Resource + Clone> Merge<K> {
    fn all_listed(&self) -> bool {
        self.listed.len() == self.expected
    }

    /// The events the store should see for one namespace's event.
    fn on(&mut self, ns: String, ev: Event<K>) -> Vec<Event<K>> {
        match ev {
            Event::Init => {
                self.listing.insert(ns, BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(o) => {
                self.listing.entry(ns).or_default().insert(o.name_any(), o);
                Vec::new()
            }
            Event::InitDone => {
                let objects = self.listing.remove(&ns).unwrap_or_default();
                self.listed.insert(ns, objects);
                if !self.all_listed() {
                    return Vec::new();
                }
                let mut out = vec![Event::Init];
                out.extend(
                    self.listed
                        .values()
                        .flat_map(|m| m.values().cloned())
                        .map(Event::InitApply),
                );
                out.push(Event::InitDone);
                out
            }
            Event::Apply(o) => {
                self.listed
                    .entry(ns)
                    .or_default()
                    .insert(o.name_any(), o.clone());
                if self.all_listed() {
                    vec![Event::Apply(o)]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(o) => {
                if let Some(m) = self.listed.get_mut(&ns) {
                    m.remove(&o.name_any());
                }
                if self.all_listed() {
                    vec![Event::Delete(o)]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

fn merge<K>(
    expected: usize,
    tagged: BoxStream<'static, (String, Result<Event<K>, watcher::Error>)>,
) -> Events<K>
where
    K: Resource + Clone + Send + 'static,
{
    let state = Merge::<K> {
        expected,
        listed: BTreeMap::new(),
        listing: BTreeMap::new(),
    };
    tagged
        .scan(state, |state, (ns, item)| {
            let out: Vec<Result<Event<K>, watcher::Error>> = match item {
                Ok(ev) => state.on(ns, ev).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::future::ready(Some(stream::iter(out)))
        })
        .flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(evs: &[Event<ConfigMap>]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                Event::Init => "Init".to_string(),
                Event::InitDone => "InitDone".to_string(),
                Event::InitApply(o) => {
                    format!("InitApply {}/{}", o.namespace().unwrap(), o.name_any())
                }
                Event::Apply(o) => format!("Apply {}/{}", o.namespace().unwrap(), o.name_any()),
                Event::Delete(o) => format!("Delete {}/{}", o.namespace().unwrap(), o.name_any()),
            })
            .collect()
    }

    #[test]
    fn flags_give_a_scope() {
        assert_eq!(Scope::from_flags(&[]), Ok(Scope::All));
        assert_eq!(Scope::from_flags(&[" , ".into()]), Ok(Scope::All));
        assert_eq!(
            Scope::from_flags(&["lab-a,lab-b".into(), "lab-a".into(), "lab-c".into()]),
            Ok(Scope::Namespaces(vec![
                "lab-a".into(),
                "lab-b".into(),
                "lab-c".into()
            ]))
        );
        let err = Scope::from_flags(&["lab-a,Lab_B".into()]).unwrap_err();
        assert_eq!(err, NotANamespace("Lab_B".into()));
        assert!(
            err.to_string().contains("`Lab_B` is not a namespace name"),
            "{err}"
        );
        assert!(Scope::from_flags(&["a".repeat(64)]).is_err());
        assert!(Scope::from_flags(&["-a".into()]).is_err());
        let s = Scope::from_flags(&["a,b".into()]).unwrap();
        assert!(s.contains("a") && s.contains("b") && !s.contains("c"));
        assert!(Scope::All.contains("anything"));
    }

    #[test]
    fn the_store_sees_nothing_until_every_namespace_listed_then_the_union() {
        let mut m = Merge::<ConfigMap> {
            expected: 2,
            listed: BTreeMap::new(),
            listing: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for (ns, ev) in [
            ("a", Event::Init),
            ("a", Event::InitApply(cm("a", "x"))),
            ("b", Event::Init),
            ("a", Event::InitDone),
            ("a", Event::Apply(cm("a", "y"))),
            ("b", Event::InitApply(cm("b", "x"))),
        ] {
            out.extend(m.on(ns.into(), ev));
        }
        assert!(out.is_empty(), "nothing before b listed: {:?}", names(&out));
        let out = m.on("b".into(), Event::InitDone);
        assert_eq!(
            names(&out),
            [
                "Init",
                "InitApply a/x",
                "InitApply a/y",
                "InitApply b/x",
                "InitDone"
            ]
        );
        // Then changes pass through, and a re-list of one namespace is a
        // re-list of the union, without what was deleted meanwhile.
        assert_eq!(
            names(&m.on("b".into(), Event::Apply(cm("b", "z")))),
            ["Apply b/z"]
        );
        assert_eq!(
            names(&m.on("a".into(), Event::Delete(cm("a", "x")))),
            ["Delete a/x"]
        );
        assert!(m.on("a".into(), Event::Init).is_empty());
        assert!(m.on("a".into(), Event::InitApply(cm("a", "y"))).is_empty());
        assert_eq!(
            names(&m.on("a".into(), Event::InitDone)),
            [
                "Init",
                "InitApply a/y",
                "InitApply b/x",
                "InitApply b/z",
                "InitDone"
            ]
        );
    }

    #[tokio::test]
    async fn the_merged_stream_feeds_one_store_with_every_namespace() {
        use kube::runtime::reflector;
        let a = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "x"))),
            Ok(Event::InitDone),
        ];
        let b = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("b", "x"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("b", "y"))),
        ];
        let tagged = stream::iter(
            a.into_iter()
                .map(|e| ("a".to_string(), e))
                .chain(b.into_iter().map(|e| ("b".to_string(), e))),
        )
        .boxed();
        let (store, writer) = reflector::store();
        let n = merge(2, tagged).reflect(writer).count().await;
        assert_eq!(n, 5, "Init, 2 × InitApply, InitDone, then the Apply");
        let mut keys: Vec<_> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap(), o.name_any()))
            .collect();
        keys.sort();
        assert_eq!(keys, ["a/x", "b/x", "b/y"]);
    }
}
