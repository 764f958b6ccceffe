//! Operator-supplied `key=value` settings with typed getters whose errors read
//! well in an operator's terminal.

use std::str::FromStr;

/// Operator-supplied `key=value` settings, with typed getters whose errors read
/// well in an operator's terminal.
#[derive(Clone, Debug, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The value for `key`; when a key is repeated the last one wins, as with
    /// command-line flags.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        self.parse_or(key, default, "a non-negative integer")
    }

    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32, String> {
        self.parse_or(key, default, "an integer from 0 to 4294967295")
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        let value: f64 = self.parse_or(key, default, "a number")?;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(format!(
                "policy config `{key}`: expected a finite number, got `{value}`"
            ))
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some("true" | "yes" | "on" | "1") => Ok(true),
            Some("false" | "no" | "off" | "0") => Ok(false),
            Some(other) => Err(format!(
                "policy config `{key}`: expected true or false, got `{other}`"
            )),
        }
    }

    fn parse_or<T: FromStr>(&self, key: &str, default: T, expected: &str) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| format!("policy config `{key}`: expected {expected}, got `{raw}`")),
        }
    }

    /// Rejects keys outside `accepted`, so that a typo is an error at load time
    /// rather than a silently ignored setting.
    pub fn check_keys(&self, policy: &str, accepted: &[&str]) -> Result<(), String> {
        match self
            .entries
            .iter()
            .find(|(k, _)| !accepted.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((key, _)) => Err(format!(
                "{policy} policy: unknown config key `{key}`; accepted keys: {}",
                list_or_none(accepted)
            )),
        }
    }
}

fn list_or_none(keys: &[&str]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
