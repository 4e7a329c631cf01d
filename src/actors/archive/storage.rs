//! Where recordings are written: one small interface (`Storage`) over the few operations the
//! archive needs, so the writer, the recovery and the VOD routes do not care what is behind it.
//! Paths are relative to the archive root (`<video id>/<rendition>/seg-12.m4s`) and always made
//! by the archive itself (ids and rendition names), never taken from a request.
//!
//! `LocalStorage` is a directory on the local filesystem. Every call is blocking: the archive
//! runs them on tokio's blocking pool, never on a runtime thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub trait Storage: Send + Sync + 'static {
    /// Append `data` to the file (created if missing); returns its length after the append.
    fn append(&self, path: &str, data: &[u8]) -> io::Result<u64>;
    /// Replace the file's content all at once: written under a temporary name, flushed, then
    /// renamed, so a reader (or a crash) sees the old content or the new, never a mix.
    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Force the file's content to the disk.
    fn sync(&self, path: &str) -> io::Result<()>;
    /// Cut the file to `len` bytes (no-op when it is shorter or missing).
    fn truncate(&self, path: &str, len: u64) -> io::Result<()>;
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// The file's length; `NotFound` when missing.
    fn len(&self, path: &str) -> io::Result<u64>;
    /// Names in a directory (files and directories), sorted.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Remove a file; no error when it is missing.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Remove a directory and everything in it; no error when it is missing.
    fn remove_dir(&self, dir: &str) -> io::Result<()>;
    /// The local file behind `path`, when there is one (the VOD routes serve it with ranges).
    fn local_path(&self, path: &str) -> Option<PathBuf>;
}

/// A directory on the local filesystem.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn parent_dir(p: &Path) -> io::Result<()> {
        match p.parent() {
            Some(dir) => fs::create_dir_all(dir),
            None => Ok(()),
        }
    }
}

impl Storage for LocalStorage {
    fn append(&self, path: &str, data: &[u8]) -> io::Result<u64> {
        let p = self.path(path);
        Self::parent_dir(&p)?;
        let mut f = OpenOptions::new().create(true).append(true).open(&p)?;
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(data) {
            // Leave no torn tail behind (a full disk takes part of a write): the file is what it
            // was, so the next append continues from a whole one.
            let _ = f.set_len(before);
            return Err(e);
        }
        Ok(before + data.len() as u64)
    }

    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let p = self.path(path);
        Self::parent_dir(&p)?;
        let tmp =
            p.with_extension(format!("{}.tmp", p.extension().and_then(|e| e.to_str()).unwrap_or_default()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            // The rename itself is durable once the directory is flushed.
            if let Some(dir) = p.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn sync(&self, path: &str) -> io::Result<()> {
        OpenOptions::new().append(true).open(self.path(path))?.sync_data()
    }

    fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        match OpenOptions::new().write(true).open(self.path(path)) {
            Ok(f) if f.metadata()?.len() > len => f.set_len(len),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(path))
    }

    fn len(&self, path: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(path))?.len())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(self.path(dir))?
            .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        match fs::remove_file(self.path(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn remove_dir(&self, dir: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.path(dir)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn local_path(&self, path: &str) -> Option<PathBuf> {
        Some(self.path(path))
    }
}

/// Test double: the local filesystem, failing every write with "no space left" while `full`.
#[cfg(test)]
pub struct FullDisk {
    pub inner: LocalStorage,
    pub full: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl FullDisk {
    fn check(&self) -> io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device (test)"));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Storage for FullDisk {
    fn append(&self, path: &str, data: &[u8]) -> io::Result<u64> {
        self.check()?;
        self.inner.append(path, data)
    }
    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write_atomic(path, data)
    }
    fn sync(&self, path: &str) -> io::Result<()> {
        self.inner.sync(path)
    }
    fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn len(&self, path: &str) -> io::Result<u64> {
        self.inner.len(path)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn remove_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.remove_dir(dir)
    }
    fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.inner.local_path(path)
    }
}
