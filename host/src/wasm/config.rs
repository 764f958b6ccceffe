//! Which `key=value` setting goes to which policy.
//!
//! A setting is given as `--policy-config KEY=VALUE` (global) or
//! `--policy-config POLICY:KEY=VALUE` (scoped), and in `bench` also inline as
//! `--policy POLICY:KEY=VALUE,KEY=VALUE`. Built-in policies take no settings, so
//! a global setting is meant for a WebAssembly policy; it goes to the one the
//! command runs, and is an error when several could take it and none is named.
//! Policies are matched by what they resolve to, so `lfu`, `lfu.wasm` and a
//! path to the same file are one policy.

use std::path::PathBuf;

use super::error::PolicyError;
use super::locate::{locate, PolicySource};

/// `key=value` settings in the order given (a later repeat wins in the SDK).
pub type ConfigPairs = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigArgError {
    #[error("invalid policy config `{0}`: expected KEY=VALUE or POLICY:KEY=VALUE")]
    BadPair(String),
    #[error("invalid --policy `{0}`: expected POLICY or POLICY:KEY=VALUE[,KEY=VALUE...]")]
    BadPolicy(String),
    #[error("--policy-config `{arg}` is for `{named}`, which is not {among}")]
    OtherPolicy {
        arg: String,
        named: String,
        among: String,
    },
    #[error(
        "--policy-config `{arg}` could go to any of the WebAssembly policies {}; \
         name the one it is for: `--policy-config POLICY:{arg}` (or `--policy POLICY:{arg}`)",
        policies.join(", ")
    )]
    Ambiguous { arg: String, policies: Vec<String> },
    #[error(
        "--policy-config `{arg}` has no policy to go to: built-in policies take no \
         configuration; name a WebAssembly policy (e.g. `--policy lfu.wasm:{arg}`)"
    )]
    NoTarget { arg: String },
    #[error(
        "the built-in `{policy}` policy takes no configuration (got `{key}`); \
         use `{policy}.wasm` for the WebAssembly one"
    )]
    Builtin { policy: String, key: String },
}

/// One `--policy-config` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigArg {
    Global {
        key: String,
        value: String,
    },
    Scoped {
        spec: String,
        key: String,
        value: String,
    },
}

impl ConfigArg {
    pub fn parse(text: &str) -> Result<Self, ConfigArgError> {
        let bad = || ConfigArgError::BadPair(text.to_owned());
        let (left, value) = text.split_once('=').ok_or_else(bad)?;
        let value = value.trim().to_owned();
        match left.rsplit_once(':') {
            Some((spec, key)) if !spec.trim().is_empty() && !key.trim().is_empty() => {
                Ok(ConfigArg::Scoped {
                    spec: spec.trim().to_owned(),
                    key: key.trim().to_owned(),
                    value,
                })
            }
            Some(_) => Err(bad()),
            None if left.trim().is_empty() => Err(bad()),
            None => Ok(ConfigArg::Global {
                key: left.trim().to_owned(),
                value,
            }),
        }
    }

    fn pair(&self) -> (String, String) {
        match self {
            ConfigArg::Global { key, value } | ConfigArg::Scoped { key, value, .. } => {
                (key.clone(), value.clone())
            }
        }
    }
}

/// A `--policy POLICY[:KEY=VALUE,...]` argument of `bench`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyArg {
    pub spec: String,
    pub config: ConfigPairs,
}

impl PolicyArg {
    /// Settings start at the last `:` before the first `=`, so a path may hold
    /// `:` and a value may hold `:`; values cannot hold `,` here (use
    /// `--policy-config POLICY:KEY=VALUE` for those).
    pub fn parse(text: &str) -> Result<Self, ConfigArgError> {
        let bad = || ConfigArgError::BadPolicy(text.to_owned());
        let Some(eq) = text.find('=') else {
            let spec = text.trim();
            if spec.is_empty() {
                return Err(bad());
            }
            return Ok(Self {
                spec: spec.to_owned(),
                config: Vec::new(),
            });
        };
        let colon = text[..eq].rfind(':').ok_or_else(bad)?;
        let spec = text[..colon].trim();
        if spec.is_empty() {
            return Err(bad());
        }
        let config = text[colon + 1..]
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            spec: spec.to_owned(),
            config,
        })
    }
}

/// Parses every `--policy-config` argument.
pub fn parse_config_args(args: &[String]) -> Result<Vec<ConfigArg>, ConfigArgError> {
    args.iter().map(|a| ConfigArg::parse(a)).collect()
}

/// The settings for the one policy a command runs (`config`, `policy check`,
/// the proxy): every global one, and the scoped ones naming this policy. A
/// scoped setting for another policy is an error rather than silently unused.
pub fn config_for(
    spec: &str,
    args: &[String],
    dirs: &[PathBuf],
) -> Result<ConfigPairs, PolicyError> {
    let args = parse_config_args(args)?;
    let mut target: Option<PolicySource> = None;
    let mut pairs = Vec::new();
    for (arg, text) in args.iter().zip(args_text(&args)) {
        if let ConfigArg::Scoped { spec: named, .. } = arg {
            let resolved = match &target {
                Some(source) => source.clone(),
                None => target.insert(locate(spec, dirs)?).clone(),
            };
            if locate(named, dirs)? != resolved {
                return Err(ConfigArgError::OtherPolicy {
                    arg: text,
                    named: named.clone(),
                    among: format!("the policy in use (`{spec}`)"),
                }
                .into());
            }
        }
        pairs.push(arg.pair());
    }
    Ok(pairs)
}

fn args_text(args: &[ConfigArg]) -> Vec<String> {
    args.iter()
        .map(|arg| match arg {
            ConfigArg::Global { key, value } => format!("{key}={value}"),
            ConfigArg::Scoped { spec, key, value } => format!("{spec}:{key}={value}"),
        })
        .collect()
}

/// A policy to run with its settings, as `bench` compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredPolicy {
    /// How results name it: the spec, then `:key=value,...` when configured.
    pub label: String,
    /// As `--eviction-policy` takes it.
    pub spec: String,
    pub config: ConfigPairs,
}

impl ConfiguredPolicy {
    /// A policy without settings.
    pub fn named(spec: &str) -> Self {
        Self {
            label: spec.to_owned(),
            spec: spec.to_owned(),
            config: Vec::new(),
        }
    }

    fn relabel(&mut self) {
        self.label = if self.config.is_empty() {
            self.spec.clone()
        } else {
            let pairs: Vec<String> = self
                .config
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{}:{}", self.spec, pairs.join(","))
        };
    }
}

/// Attaches settings to the policies a `bench` compares.
///
/// `policies` are the `--policy` arguments (inline settings included);
/// `chosen` is the index among them of `--eviction-policy`'s policy when that
/// is a WebAssembly one, which then takes the global settings, as it would in
/// the proxy. Without it, global
/// settings go to the only WebAssembly policy compared, and are an error when
/// there are none or several. Scoped settings go to every entry of the policy
/// they name. Order within a policy: global, scoped, inline (the last wins).
pub fn configure(
    policies: Vec<PolicyArg>,
    chosen: Option<usize>,
    config_args: &[String],
    dirs: &[PathBuf],
) -> Result<Vec<ConfiguredPolicy>, PolicyError> {
    let args = parse_config_args(config_args)?;
    let texts = args_text(&args);
    let sources: Vec<PolicySource> = policies
        .iter()
        .map(|p| locate(&p.spec, dirs))
        .collect::<Result<_, _>>()?;
    let mut configs: Vec<ConfigPairs> = vec![Vec::new(); policies.len()];
    let wasm: Vec<usize> = (0..policies.len())
        .filter(|&i| matches!(sources[i], PolicySource::File(_)))
        .collect();
    let names = |indices: &[usize]| -> Vec<String> {
        let mut names: Vec<String> = indices.iter().map(|&i| policies[i].spec.clone()).collect();
        names.dedup();
        names
    };
    // Global settings first, so scoped and inline ones override them.
    for (arg, text) in args.iter().zip(&texts) {
        let ConfigArg::Global { .. } = arg else {
            continue;
        };
        let targets: Vec<usize> = match chosen {
            Some(chosen) if chosen < policies.len() => vec![chosen],
            _ => wasm.clone(),
        };
        let distinct: Vec<&PolicySource> = {
            let mut seen: Vec<&PolicySource> = Vec::new();
            for &i in &targets {
                if !seen.contains(&&sources[i]) {
                    seen.push(&sources[i]);
                }
            }
            seen
        };
        match distinct.len() {
            0 => return Err(ConfigArgError::NoTarget { arg: text.clone() }.into()),
            1 => targets.iter().for_each(|&i| configs[i].push(arg.pair())),
            _ => {
                return Err(ConfigArgError::Ambiguous {
                    arg: text.clone(),
                    policies: names(&targets),
                }
                .into())
            }
        }
    }
    for (arg, text) in args.iter().zip(&texts) {
        let ConfigArg::Scoped { spec: named, .. } = arg else {
            continue;
        };
        let source = locate(named, dirs)?;
        let targets: Vec<usize> = (0..policies.len())
            .filter(|&i| sources[i] == source)
            .collect();
        if targets.is_empty() {
            return Err(ConfigArgError::OtherPolicy {
                arg: text.clone(),
                named: named.clone(),
                among: format!(
                    "among the policies compared ({})",
                    names(&(0..policies.len()).collect::<Vec<_>>()).join(", ")
                ),
            }
            .into());
        }
        targets.iter().for_each(|&i| configs[i].push(arg.pair()));
    }
    let mut out: Vec<ConfiguredPolicy> = Vec::new();
    for (policy, mut config) in policies.into_iter().zip(configs) {
        config.extend(policy.config);
        let mut entry = ConfiguredPolicy {
            label: String::new(),
            spec: policy.spec,
            config,
        };
        entry.relabel();
        if !out.iter().any(|e| e.label == entry.label) {
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> Vec<PathBuf> {
        vec![PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies"
        ))]
    }

    fn policies(specs: &[&str]) -> Vec<PolicyArg> {
        specs
            .iter()
            .map(|s| PolicyArg::parse(s).expect("valid"))
            .collect()
    }

    fn labels(configured: &[ConfiguredPolicy]) -> Vec<&str> {
        configured.iter().map(|p| p.label.as_str()).collect()
    }

    #[test]
    fn policy_config_arguments_parse_global_scoped_and_inline() {
        assert_eq!(
            ConfigArg::parse("k=v").expect("global"),
            ConfigArg::Global {
                key: "k".into(),
                value: "v".into()
            }
        );
        assert_eq!(
            ConfigArg::parse("lfu.wasm:k=a:b").expect("scoped"),
            ConfigArg::Scoped {
                spec: "lfu.wasm".into(),
                key: "k".into(),
                value: "a:b".into()
            }
        );
        assert!(ConfigArg::parse("novalue").is_err());
        assert!(ConfigArg::parse(":k=v").is_err());
        assert!(ConfigArg::parse("lfu:=v").is_err());
        let arg = PolicyArg::parse("dir:x/lfu.wasm:k=v,k2=v2").expect("inline");
        assert_eq!(arg.spec, "dir:x/lfu.wasm");
        assert_eq!(
            arg.config,
            vec![("k".into(), "v".into()), ("k2".into(), "v2".into())]
        );
        assert_eq!(PolicyArg::parse("lru").expect("plain").config, vec![]);
        assert!(PolicyArg::parse("lfu.wasm:k=v,oops").is_err());
        assert!(PolicyArg::parse("k=v").is_err());
    }

    #[test]
    fn policy_config_goes_to_the_policy_it_names_and_never_to_a_builtin() {
        let dirs = dirs();
        // A global setting with one WebAssembly policy compared goes to it alone.
        let got = configure(policies(&["lru", "lfu.wasm"]), None, &["k=v".into()], &dirs)
            .expect("unambiguous");
        assert_eq!(labels(&got), vec!["lru", "lfu.wasm:k=v"]);
        // Several: ambiguous unless named.
        let err = configure(
            policies(&["lru", "lfu.wasm", "fifo.wasm"]),
            None,
            &["k=v".into()],
            &dirs,
        )
        .expect_err("ambiguous");
        assert!(err.to_string().contains("lfu.wasm, fifo.wasm"), "{err}");
        assert!(err.to_string().contains("POLICY:k=v"), "{err}");
        // --eviction-policy's policy takes the global settings.
        let got = configure(
            policies(&["lfu.wasm", "fifo.wasm", "lfu"]),
            Some(2),
            &["k=v".into()],
            &dirs,
        )
        .expect("chosen");
        assert_eq!(labels(&got), vec!["lfu.wasm", "fifo.wasm", "lfu:k=v"]);
        // Scoped settings match by file, whatever the spelling; inline wins last.
        let got = configure(
            policies(&["lru", "lfu:a=3", "fifo.wasm"]),
            None,
            &["lfu.wasm:a=1".into(), "lfu.wasm:b=2".into()],
            &dirs,
        )
        .expect("scoped");
        assert_eq!(labels(&got), vec!["lru", "lfu:a=1,b=2,a=3", "fifo.wasm"]);
        let err = configure(policies(&["lru", "fifo"]), None, &["k=v".into()], &dirs)
            .expect_err("only built-ins");
        assert!(err.to_string().contains("built-in"), "{err}");
        let err = configure(
            policies(&["lru", "fifo.wasm"]),
            None,
            &["lfu:k=v".into()],
            &dirs,
        )
        .expect_err("not compared");
        assert!(err.to_string().contains("not among"), "{err}");
    }

    #[test]
    fn policy_config_for_one_policy_refuses_settings_for_another() {
        let dirs = dirs();
        let pairs =
            config_for("lfu", &["a=1".into(), "lfu.wasm:b=2".into()], &dirs).expect("both for lfu");
        assert_eq!(
            pairs,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        let err = config_for("lfu", &["fifo.wasm:b=2".into()], &dirs).expect_err("other");
        assert!(err.to_string().contains("fifo.wasm"), "{err}");
    }
}
