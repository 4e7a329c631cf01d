//! Finished recordings in S3-compatible object storage (`[archive.s3]`), through the
//! `object_store` crate.
//!
//! A recording is always written to the local archive first (crash-safe appends, which an
//! object store does not have), and moved when it is finished: every file of its directory is
//! uploaded (media first, the journals and playlists last, so whoever finds a journal finds
//! what it names), its row says `backend = 's3'`, and then the local copy is removed. An object
//! store that is down never touches recording or live output: the move is retried until it
//! succeeds, and meanwhile the recording plays from the local disk. Playback of a moved
//! recording reads its journals from the bucket (once; the index is cached) and either proxies
//! media with byte ranges or redirects to a short-lived presigned URL (`delivery`).
//!
//! Object names: `<prefix>/<video id>/<rendition>/<file>` and `<prefix>/<video id>/<file>`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

use super::journal::{RecordedRendition, JOURNAL};
use super::storage::Storage;
use super::RecordingIndex;

/// How a moved recording's media reach players.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The server reads the object (with the player's byte range) and sends it on.
    Proxy,
    /// 302 to a presigned URL valid for `presign_ttl`: the bucket serves the bytes.
    Redirect,
}

/// `[archive.s3]`, resolved.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`, ...
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://endpoint/bucket/key` (MinIO, moto, most self-hosted stores) rather than
    /// `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub prefix: String,
    pub delivery: Delivery,
    pub presign_ttl: Duration,
}

/// The bucket of finished recordings.
pub struct Remote {
    store: Arc<AmazonS3>,
    prefix: String,
    pub delivery: Delivery,
    ttl: Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Remote")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => std::io::Error::new(std::io::ErrorKind::NotFound, e),
        e => std::io::Error::other(e),
    }
}

impl Remote {
    pub fn new(s: &S3Settings) -> crate::Result<Remote> {
        let store = AmazonS3Builder::new()
            .with_endpoint(s.endpoint.trim_end_matches('/'))
            .with_allow_http(s.endpoint.starts_with("http://"))
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            .with_virtual_hosted_style_request(!s.path_style)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(20),
                ..Default::default()
            })
            .build()
            .map_err(|e| crate::Error::invalid(format!("archive.s3: {e}")))?;
        Ok(Remote {
            store: Arc::new(store),
            prefix: s.prefix.trim_matches('/').to_owned(),
            delivery: s.delivery,
            ttl: s.presign_ttl,
        })
    }

    /// The object name of a file of the archive (`12/source/seg-3.m4s`).
    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Upload every file of local recording `video_id`: media first, journals and playlists
    /// last. Returns the bytes uploaded.
    pub async fn upload(&self, local: Arc<dyn Storage>, video_id: i64) -> std::io::Result<u64> {
        let root = video_id.to_string();
        let listed = {
            let local = local.clone();
            let root = root.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
                let mut files = Vec::new();
                for name in local.list(&root)? {
                    let rel = format!("{root}/{name}");
                    match local.list(&rel) {
                        Ok(inner) => files.extend(inner.into_iter().map(|f| format!("{rel}/{f}"))),
                        Err(_) => files.push(rel),
                    }
                }
                Ok(files)
            })
            .await
            .map_err(std::io::Error::other)??
        };
        let late = |f: &String| f.ends_with(JOURNAL) || f.ends_with(".m3u8");
        let (mut last, first): (Vec<String>, Vec<String>) = listed.into_iter().partition(late);
        // The multivariant playlist names the renditions' playlists: it goes very last.
        last.sort_by_key(|f| f.matches('/').count() == 1);
        let mut bytes = 0;
        for rel in first.into_iter().chain(last) {
            if rel.ends_with(".tmp") || rel.ends_with(".tmp.jpg") {
                continue;
            }
            let data = {
                let (local, rel) = (local.clone(), rel.clone());
                tokio::task::spawn_blocking(move || local.read(&rel))
                    .await
                    .map_err(std::io::Error::other)??
            };
            bytes += data.len() as u64;
            self.store.put(&self.path(&rel), PutPayload::from(data)).await.map_err(io)?;
        }
        Ok(bytes)
    }

    /// A moved recording's index, from its journals in the bucket.
    pub async fn load_index(&self, video_id: i64) -> Option<RecordingIndex> {
        let listing = self.store.list_with_delimiter(Some(&self.path(&video_id.to_string()))).await.ok()?;
        let index = RecordingIndex::new(false);
        let mut any = false;
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename().map(str::to_owned) else { continue };
            let Ok(got) = self.store.get(&self.path(&format!("{video_id}/{name}/{JOURNAL}"))).await else {
                continue;
            };
            let Ok(text) = got.bytes().await else { continue };
            let (r, _) = RecordedRendition::replay(&String::from_utf8_lossy(&text));
            index.add(&name, r);
            any = true;
        }
        any.then_some(index)
    }

    /// Read a file, or the byte range of it.
    pub async fn get(&self, rel: &str, range: Option<GetRange>) -> std::io::Result<GetResult> {
        let options = GetOptions { range, ..Default::default() };
        self.store.get_opts(&self.path(rel), options).await.map_err(io)
    }

    /// A file's size and ETag.
    pub async fn head(&self, rel: &str) -> std::io::Result<object_store::ObjectMeta> {
        self.store.head(&self.path(rel)).await.map_err(io)
    }

    /// A presigned GET URL for a file, valid for `presign_ttl`.
    pub async fn presign(&self, rel: &str) -> std::io::Result<String> {
        let url = self
            .store
            .signed_url(object_store::signer::Method::GET, &self.path(rel), self.ttl)
            .await
            .map_err(io)?;
        Ok(url.to_string())
    }

    /// Delete every object of recording `video_id`.
    pub async fn delete(&self, video_id: i64) -> std::io::Result<()> {
        let prefix = self.path(&video_id.to_string());
        let names: Vec<ObjectPath> =
            self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.map_err(io)?;
        for name in names {
            match self.store.delete(&name).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }
}
