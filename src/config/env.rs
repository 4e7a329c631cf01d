//! The environment layer of the configuration: `TIDECAST__SECTION__KEY=value` variables turned
//! into a figment [`Provider`] that [`Config::load_with_env`](super::Config::load_with_env)
//! merges over the file.
//!
//! Invariants: only names starting with [`ENV_PREFIX`] (any case) are read; the rest of the name
//! is split on `__` into a lowercase key path, and a name with an empty part is ignored; every
//! value stays a string (lossy extraction turns `"5"` into a number where a number is expected);
//! a later pair for the same key wins.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Prefix of the environment variables that override the file: `TIDECAST__SECTION__KEY`.
pub const ENV_PREFIX: &str = "TIDECAST__";

/// Separator between the section and key parts of an environment variable name.
const ENV_SEPARATOR: &str = "__";

/// The `TIDECAST__SECTION__KEY` environment layer, built from explicit pairs.
///
/// Unlike figment's `Env`, it does not read the process environment itself (so tests can pass
/// their own pairs), and it keeps every value a string: figment's `Env` would turn `1.5` into a
/// float or `8080` into an integer, which a `String` field then rejects. Numbers and bools are
/// recovered by the lossy extraction in
/// [`Config::load_with_env`](super::Config::load_with_env).
pub(super) struct EnvOverrides {
    /// (dotted lowercase key path, value) pairs, in input order.
    pairs: Vec<(String, String)>,
}

impl EnvOverrides {
    pub(super) fn new(env: &[(String, String)]) -> Self {
        let pairs = env
            .iter()
            .filter_map(|(name, value)| {
                let prefix = name.get(..ENV_PREFIX.len())?;
                if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
                    return None;
                }
                let path: Vec<String> =
                    name[ENV_PREFIX.len()..].split(ENV_SEPARATOR).map(str::to_ascii_lowercase).collect();
                if path.iter().any(String::is_empty) {
                    return None;
                }
                Some((path.join("."), value.clone()))
            })
            .collect();
        Self { pairs }
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, keys: &[&str]| {
                format!("{ENV_PREFIX}{}", keys.join(ENV_SEPARATOR).to_ascii_uppercase())
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (path, value) in &self.pairs {
            insert_path(&mut root, path, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Inserts `value` at dotted `path` in `dict`, creating (or replacing non-dict values with)
/// intermediate dictionaries. A later insert of the same path wins.
fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict.entry(head.to_owned()).or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}
