//! What the fuzz harnesses share: JSON made to break parsers (edge numbers, hostile strings,
//! deep and wide shapes), mutations of a valid document (a node replaced, removed, an
//! unknown key added), and the process's peak memory per case, so a case that allocates
//! without bound is caught by its size rather than by the machine running out.

#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Map, Value};

/// The process's peak resident memory, from the kernel: reset before a case (writing 5 to
/// `/proc/self/clear_refs` sets the peak to what is resident now), read after it.
pub struct Peak;

impl Peak {
    /// Resident bytes now; the peak starts again from here.
    pub fn reset() -> usize {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        status_kb("VmRSS:") * 1024
    }

    pub fn bytes() -> usize {
        status_kb("VmHWM:") * 1024
    }
}

fn status_kb(key: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The most a case may allocate above what was live when it began.
pub const CASE_MEMORY: usize = 256 << 20;

/// Cases per harness: `LIFTOFF_FUZZ_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("LIFTOFF_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Strings that have broken parsers before: paths that climb, placeholders, NULs, control
/// and wide characters, shell and YAML syntax, and one long string.
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("../../../../etc/passwd".to_string()),
        Just("/".to_string()),
        Just("{{x}}".to_string()),
        Just("{{".to_string()),
        Just("${program}".to_string()),
        Just("a\u{0}b".to_string()),
        Just("\u{202e}\u{1F600}é".to_string()),
        Just("$(reboot); `id`".to_string()),
        Just("- [ : }".to_string()),
        Just("sha256:zz".to_string()),
        Just("x".repeat(70_000)),
        "[a-z_.:/-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

/// Numbers at the edges of every integer width and of `f64`.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(i64::MAX)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(u32::MAX as u64 + 1)),
        Just(Value::from(i32::MIN as i64 - 1)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e-308)),
        Just(serde_json::json!(0.5)),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| serde_json::json!(f)),
    ]
}

/// Any JSON, leaning to what breaks parsers.
pub fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            // Deep nesting, past serde_json's recursion limit and short of it.
            (1usize..200).prop_map(|depth| {
                let mut v = Value::Null;
                for _ in 0..depth {
                    v = Value::Array(vec![v]);
                }
                v
            }),
            // Wide: many elements of one kind.
            (0usize..5000).prop_map(|n| Value::Array(vec![Value::from(1); n])),
        ]
    })
}

/// One change to a document: `at` picks a node (modulo their number).
#[derive(Clone, Debug)]
pub enum Mutation {
    Replace {
        at: usize,
        with: Value,
    },
    /// A number of the document (picked among its numbers) set to an edge number: where
    /// sizes, counts and ranges come from.
    Edge {
        at: usize,
        with: Value,
    },
    Remove {
        at: usize,
    },
    AddKey {
        at: usize,
        key: String,
        with: Value,
    },
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), junk()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        2 => (any::<usize>(), edge_number()).prop_map(|(at, with)| Mutation::Edge { at, with }),
        2 => any::<usize>().prop_map(|at| Mutation::Remove { at }),
        2 => (any::<usize>(), hostile_string(), junk())
            .prop_map(|(at, key, with)| Mutation::AddKey { at, key, with }),
    ]
}

/// Every node's path from the root, the root first.
fn paths(v: &Value, here: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(here.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(PathStep::Index(i));
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                here.push(PathStep::Key(k.clone()));
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        PathStep::Key(k) => v.get_mut(k.as_str()),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

/// The document with the mutations applied in order.
pub fn apply(seed: &Value, mutations: &[Mutation]) -> Value {
    let mut doc = seed.clone();
    for m in mutations {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let pick = |at: usize| all[at % all.len()].clone();
        match m {
            Mutation::Replace { at, with } => {
                if let Some(node) = node_mut(&mut doc, &pick(*at)) {
                    *node = with.clone();
                }
            }
            Mutation::Edge { at, with } => {
                let numbers: Vec<_> = all
                    .iter()
                    .filter(|p| node_mut(&mut doc, p).is_some_and(|v| v.is_number()))
                    .cloned()
                    .collect();
                if let Some(path) = numbers.get(at % numbers.len().max(1)) {
                    if let Some(node) = node_mut(&mut doc, path) {
                        *node = with.clone();
                    }
                }
            }
            Mutation::Remove { at } => {
                let path = pick(*at);
                if let Some((last, parent)) = path.split_last() {
                    match (node_mut(&mut doc, parent), last) {
                        (Some(Value::Object(m)), PathStep::Key(k)) => {
                            m.remove(k);
                        }
                        (Some(Value::Array(a)), PathStep::Index(i)) if *i < a.len() => {
                            a.remove(*i);
                        }
                        _ => {}
                    }
                }
            }
            Mutation::AddKey { at, key, with } => {
                if let Some(Value::Object(m)) = node_mut(&mut doc, &pick(*at)) {
                    m.insert(key.clone(), with.clone());
                }
            }
        }
    }
    doc
}

/// A body as bytes: most often the mutated JSON; sometimes cut short, or with bytes that
/// are not UTF-8 or not JSON around it.
#[derive(Clone, Debug)]
pub enum Framing {
    Whole,
    Cut(usize),
    Garbage(Vec<u8>),
}

pub fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        8 => Just(Framing::Whole),
        1 => any::<usize>().prop_map(Framing::Cut),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Framing::Garbage),
    ]
}

pub fn frame(doc: &Value, framing: &Framing) -> Vec<u8> {
    let bytes = serde_json::to_vec(doc).unwrap();
    match framing {
        Framing::Whole => bytes,
        Framing::Cut(at) => bytes[..at % (bytes.len() + 1)].to_vec(),
        Framing::Garbage(g) => [g.as_slice(), &bytes, g.as_slice()].concat(),
    }
}
