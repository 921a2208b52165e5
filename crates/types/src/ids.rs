//! Newtype ids. Numeric ids are assigned by the store; run ids are short strings chosen by the
//! agent (W&B scripts expect a string `WANDB_RUN_ID`), validated at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! numeric_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of ", $what, ", assigned by the store.")]
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map($name)
                    .ok_or_else(|| format!("{} is not a valid {} id", s, $what))
            }
        }
    };
}

numeric_id!(ItemId, "item");
numeric_id!(AgentId, "agent");

/// The id of a run: 1 to 64 characters of `[A-Za-z0-9_-]`, so it is safe in a path, an env
/// var, a Slurm job name and a Kubernetes label.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(RunId(s.to_string()))
        } else {
            Err(format!(
                "run id {s:?} must be 1 to 64 characters of letters, digits, '-' or '_'"
            ))
        }
    }
}

impl TryFrom<String> for RunId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

/// Checks a queue name: 1 to 63 characters of lowercase letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit, so that it is safe in URLs, labels and file names.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "queue name {name:?} must be 1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print() {
        assert_eq!("42".parse::<ItemId>().unwrap(), ItemId(42));
        assert!("0".parse::<ItemId>().is_err());
        assert!("x".parse::<AgentId>().is_err());
        assert_eq!(ItemId(7).to_string(), "7");
        assert!("abc-DEF_1".parse::<RunId>().is_ok());
        assert!("../etc".parse::<RunId>().is_err());
        assert!("".parse::<RunId>().is_err());
        assert!(serde_json::from_str::<RunId>("\"a/b\"").is_err());
    }

    #[test]
    fn queue_names() {
        assert!(check_queue_name("default").is_ok());
        assert!(check_queue_name("gpu-a100.big_1").is_ok());
        assert!(check_queue_name("").is_err());
        assert!(check_queue_name("-x").is_err());
        assert!(check_queue_name("Upper").is_err());
        assert!(check_queue_name("a/b").is_err());
    }
}
