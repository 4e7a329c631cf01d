//! Key rings for the HMAC keys behind access tokens (JWT) and playback tokens.
//!
//! Format: `kid:secret` pairs separated by commas (`k2:....,k1:....`). The first key signs;
//! every key verifies, so rotation is "prepend a new key, wait one token lifetime, drop the old
//! one". Secrets are at least 32 bytes (RFC 7518 §3.2: an HS256 key must be at least as long as
//! the hash). Kids are `[A-Za-z0-9_-]`, 1-32 characters, so they can sit in a token unescaped.
//!
//! Source, first match wins: the inline value (from the environment, typically), the configured
//! file, or a file under `data_dir/secrets/` that is generated on first start with a random key
//! (mode 0600). Persisting beats a per-process random key: tokens survive restarts on a single
//! node with nothing configured; several nodes must share one configured ring.

use std::fmt;
use std::path::Path;

use rand::rngs::OsRng;
use rand::RngCore;

use crate::error::{Error, ErrorKind};

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// One key of a ring.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub secret: Vec<u8>,
}

/// Keys in order; the first signs. `Debug` shows only the kids.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=32).contains(&kid.len()) && kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl KeyRing {
    /// Parses `kid:secret,...`. Messages name the kid or position, never a secret.
    pub fn parse(text: &str) -> crate::Result<KeyRing> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, part) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let Some((kid, secret)) = part.split_once(':') else {
                return Err(Error::invalid(format!("key {i} of the key ring is not in kid:secret form")));
            };
            let kid = kid.trim();
            if !valid_kid(kid) {
                return Err(Error::invalid(format!(
                    "key {i}: kid must be 1-32 characters of A-Z a-z 0-9 _ -"
                )));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(Error::invalid(format!(
                    "key '{kid}': secret must be at least {MIN_SECRET_LEN} bytes"
                )));
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(Error::invalid(format!("key '{kid}' appears twice in the key ring")));
            }
            keys.push(Key { kid: kid.to_owned(), secret: secret.as_bytes().to_vec() });
        }
        if keys.is_empty() {
            return Err(Error::invalid("the key ring is empty"));
        }
        Ok(KeyRing { keys })
    }

    /// A ring with one fresh random key.
    pub fn generate(kid: &str) -> KeyRing {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        KeyRing { keys: vec![Key { kid: kid.to_owned(), secret: hex::encode(bytes).into_bytes() }] }
    }

    /// The key that signs.
    pub fn current(&self) -> &Key {
        &self.keys[0]
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Loads a ring from `inline` if set, else from `file` if set (it must exist), else from
    /// `default_file`, which is created with a random key if missing.
    pub fn load(inline: &str, file: &Path, default_file: &Path, what: &str) -> crate::Result<KeyRing> {
        if !inline.trim().is_empty() {
            return Self::parse(inline).map_err(|e| Error::invalid(format!("{what}: {}", e.msg)));
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                Error::with_source(
                    ErrorKind::FailedPrecondition,
                    format!("{what}: reading {}", path.display()),
                    e,
                )
            })
        };
        if !file.as_os_str().is_empty() {
            return Self::parse(&read(file)?).map_err(|e| Error::invalid(format!("{what}: {}", e.msg)));
        }
        if default_file.exists() {
            return Self::parse(&read(default_file)?)
                .map_err(|e| Error::invalid(format!("{what}: {}", e.msg)));
        }
        let ring = Self::generate("k1");
        write_secret_file(default_file, &ring.to_text()).map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!("{what}: writing {}", default_file.display()),
                e,
            )
        })?;
        tracing::warn!(
            file = %default_file.display(),
            "{what}: no key configured; generated one and saved it (share one configured key ring when running several nodes)"
        );
        Ok(ring)
    }

    fn to_text(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}:{}", k.kid, String::from_utf8_lossy(&k.secret)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_rings_and_rejects_bad_ones_without_echoing_secrets() {
        let ring = KeyRing::parse(&format!("k2:{S}x, k1:{S}")).unwrap();
        assert_eq!(ring.current().kid, "k2");
        assert!(ring.get("k1").is_some());
        assert!(ring.get("k3").is_none());
        assert_eq!(format!("{ring:?}"), r#"["k2", "k1"]"#);
        for bad in ["", "nokid", "k1:short", &format!("bad kid:{S}"), &format!("k1:{S},k1:{S}")] {
            let err = KeyRing::parse(bad).unwrap_err();
            assert!(!err.msg.contains(S), "{err}");
        }
    }

    #[test]
    fn load_generates_and_persists_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/jwt.keys");
        let a = KeyRing::load("", Path::new(""), &path, "jwt").unwrap();
        let b = KeyRing::load("", Path::new(""), &path, "jwt").unwrap();
        assert_eq!(a.current().secret, b.current().secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let inline = KeyRing::load(&format!("x:{S}"), Path::new(""), &path, "jwt").unwrap();
        assert_eq!(inline.current().kid, "x");
        let err = KeyRing::load("", Path::new("/nonexistent/keys"), &path, "jwt").unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    }
}
