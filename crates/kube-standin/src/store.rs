//! The stand-in's objects: every object of every kind in one map, each change numbered by a
//! resourceVersion that only grows, and the recent changes kept as watch events so that a
//! watch resumed from a version still held misses nothing (older ones get 410 Gone, as from
//! a real API server whose etcd has compacted them).

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::watch;

/// The kinds the stand-in keeps, by their plural resource name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Job,
    Secret,
    Event,
    /// The one custom resource: `jobset.x-k8s.io/v1alpha2` JobSet.
    JobSet,
}

impl Kind {
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Some(match plural {
            "pods" => Kind::Pod,
            "jobs" => Kind::Job,
            "secrets" => Kind::Secret,
            "events" => Kind::Event,
            "jobsets" => Kind::JobSet,
            _ => return None,
        })
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Job => "jobs",
            Kind::Secret => "secrets",
            Kind::Event => "events",
            Kind::JobSet => "jobsets",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Job => "Job",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
            Kind::JobSet => "JobSet",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            Kind::JobSet => "jobset.x-k8s.io/v1alpha2",
            _ => "v1",
        }
    }
}

pub type Key = (Kind, String, String);

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
pub struct Change {
    pub version: u64,
    pub kind: Kind,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub what: &'static str,
    pub object: Value,
}

pub struct Store {
    version: u64,
    objects: BTreeMap<Key, Value>,
    changes: VecDeque<Change>,
    /// How many changes are kept for watches to resume from.
    keep: usize,
    /// The latest version, for watches and controllers to wait on.
    pub(crate) tick: watch::Sender<u64>,
}

impl Store {
    pub fn new(keep: usize) -> Store {
        Store {
            version: 1,
            objects: BTreeMap::new(),
            changes: VecDeque::new(),
            keep: keep.max(1),
            tick: watch::channel(1).0,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A receiver that changes with every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// The oldest version a watch may resume after.
    pub fn oldest(&self) -> u64 {
        self.changes
            .front()
            .map(|c| c.version - 1)
            .unwrap_or(self.version)
    }

    /// Forgets all kept changes but the last `n` (a test's way to make a watch's version
    /// too old).
    /// The version moves on too: resourceVersions are the whole cluster's, and other
    /// objects change meanwhile.
    pub fn compact(&mut self, n: usize) {
        while self.changes.len() > n {
            self.changes.pop_front();
        }
        self.version += 1;
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    /// Objects of a kind in a namespace (all namespaces for `None`), in name order.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    pub fn names(&self, kind: Kind) -> Vec<(String, String)> {
        self.objects
            .keys()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect()
    }

    /// Writes an object (adding or replacing it) under a new version; returns it as stored.
    pub fn put(&mut self, kind: Kind, mut object: Value) -> Value {
        self.version += 1;
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!(kind.api_version());
        let key = (kind, ns.clone(), name);
        let what = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key, object.clone());
        self.record(kind, ns, what, object.clone());
        object
    }

    /// Changes an object in place, if it is there, under a new version.
    pub fn update(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut object = self.get(kind, ns, name)?.clone();
        let before = object.clone();
        change(&mut object);
        if object == before {
            return Some(object);
        }
        Some(self.put(kind, object))
    }

    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.record(kind, ns.to_string(), "DELETED", object.clone());
        Some(object)
    }

    fn record(&mut self, kind: Kind, namespace: String, what: &'static str, object: Value) {
        self.changes.push_back(Change {
            version: self.version,
            kind,
            namespace,
            what,
            object,
        });
        while self.changes.len() > self.keep {
            self.changes.pop_front();
        }
        self.tick.send_replace(self.version);
    }

    /// The changes after `version`, or `None` when some of them are no longer kept.
    pub fn changes_after(&self, version: u64) -> Option<Vec<Change>> {
        if version < self.oldest() {
            return None;
        }
        Some(
            self.changes
                .iter()
                .filter(|c| c.version > version)
                .cloned()
                .collect(),
        )
    }
}

/// A label selector as the API takes it: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
/// `a notin (x,y)`, comma-separated, all of which must hold.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Clone, Debug)]
enum Term {
    Is(String, Vec<String>),
    IsNot(String, Vec<String>),
    Has(String),
    HasNot(String),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // A set's commas are inside its parentheses.
            let end = match (rest.find('('), rest.find(',')) {
                (Some(open), Some(comma)) if open < comma => {
                    let close = rest[open..]
                        .find(')')
                        .map(|c| open + c + 1)
                        .ok_or_else(|| format!("unable to parse requirement: {rest:?}"))?;
                    rest[close..].find(',').map(|c| close + c)
                }
                (_, comma) => comma,
            };
            let (term, next) = match end {
                Some(e) => (&rest[..e], &rest[e + 1..]),
                None => (rest, ""),
            };
            terms.push(Term::parse(term.trim())?);
            rest = next.trim();
        }
        Ok(Selector { terms })
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.terms.iter().all(|t| match t {
            Term::Is(k, vs) => get(k).is_some_and(|v| vs.iter().any(|w| w == v)),
            Term::IsNot(k, vs) => !get(k).is_some_and(|v| vs.iter().any(|w| w == v)),
            Term::Has(k) => get(k).is_some(),
            Term::HasNot(k) => get(k).is_none(),
        })
    }
}

impl Term {
    fn parse(term: &str) -> Result<Term, String> {
        let bad = || format!("unable to parse requirement: {term:?}");
        let set = |s: &str| -> Result<Vec<String>, String> {
            let inner = s
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        if let Some((k, vs)) = term.split_once(" notin ") {
            return Ok(Term::IsNot(k.trim().into(), set(vs)?));
        }
        if let Some((k, vs)) = term.split_once(" in ") {
            return Ok(Term::Is(k.trim().into(), set(vs)?));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Term::IsNot(k.trim().into(), vec![v.trim().into()]));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Term::Is(k.trim().into(), vec![v.trim().into()]));
        }
        if let Some(k) = term.strip_prefix('!') {
            return Ok(Term::HasNot(k.trim().into()));
        }
        if term.is_empty() || term.contains(' ') {
            return Err(bad());
        }
        Ok(Term::Has(term.into()))
    }
}

/// A field selector: only `metadata.name` and `metadata.namespace` (what kubectl sends),
/// `=`/`==`/`!=`, comma-separated; any other field is refused as the API refuses it.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    terms: Vec<(String, bool, String)>,
}

impl Fields {
    pub fn parse(text: &str) -> Result<Fields, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: {term:?}"));
            };
            if !["metadata.name", "metadata.namespace", "involvedObject.name"].contains(&field) {
                return Err(format!(
                    "field label not supported: {field} (the stand-in takes metadata.name, metadata.namespace)"
                ));
            }
            terms.push((field.to_string(), equal, value.to_string()));
        }
        Ok(Fields { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let got = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                "metadata.namespace" => object["metadata"]["namespace"].as_str(),
                _ => object["involvedObject"]["name"].as_str(),
            };
            (got == Some(value.as_str())) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_take_the_apis_forms() {
        let labels = json!({"app": "x", "tier": "db"});
        let yes = [
            "app=x",
            "app==x,tier",
            "tier in (db, web)",
            "!gone",
            "app!=y",
        ];
        let no = ["app=y", "tier notin (db)", "gone", "app=x,!tier"];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
        assert!(Selector::parse("a in b").is_err());
    }

    #[test]
    fn a_watch_resumes_from_a_kept_version_and_not_from_a_compacted_one() {
        let mut store = Store::new(3);
        for n in 0..5 {
            store.put(Kind::Pod, json!({"metadata": {"name": format!("p{n}")}}));
        }
        assert_eq!(store.version(), 6);
        assert!(store.changes_after(2).is_none());
        let after = store.changes_after(4).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].version, 5);
    }
}
