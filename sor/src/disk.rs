//! The disk tier: one file per cached object under the pod's cache
//! directory, with its metadata beside it.
//!
//! A fill streams into `tmp/`, is checked (length, and MD5 when the ETag is
//! one), then renamed into `blobs/`; the metadata is written last, so a blob
//! without metadata is an interrupted fill and is deleted at start, as is
//! everything in `tmp/`. Eviction unlinks files: a reader that already
//! opened one keeps reading it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::Digest;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::lru::{Lru, Reserved};
use crate::source::{ObjectInfo, SourceError};

/// What the tier knows about one cached object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub sor: String,
    pub key: String,
    pub info: ObjectInfo,
    pub fetched_at_ms: u64,
    pub validated_at_ms: u64,
}

pub fn id_of(sor: &str, key: &str) -> String {
    let mut h = sha2::Sha256::new();
    sha2::Digest::update(&mut h, sor.as_bytes());
    sha2::Digest::update(&mut h, [0u8]);
    sha2::Digest::update(&mut h, key.as_bytes());
    hex::encode(sha2::Digest::finalize(h))
}

struct Inner {
    lru: Lru,
    metas: HashMap<String, Meta>,
}

pub struct DiskTier {
    root: PathBuf,
    inner: Mutex<Inner>,
}

/// What opening the tier found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub entries: usize,
    pub bytes: u64,
    /// Partial fills and blobs without metadata, deleted.
    pub removed: usize,
}

impl DiskTier {
    /// Opens (creating) the tier under `root`, cleaning up interrupted fills
    /// and rebuilding the index. Start-up only: blocking I/O.
    pub fn open(root: &Path, cap: u64) -> std::io::Result<(Arc<DiskTier>, Recovered)> {
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&tmp)?;
        let mut rec = Recovered::default();
        for e in std::fs::read_dir(&tmp)? {
            std::fs::remove_file(e?.path())?;
            rec.removed += 1;
        }
        let mut found: Vec<(Meta, String, u64, std::time::SystemTime)> = Vec::new();
        let mut names: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(&blobs)? {
            names.push(e?.path());
        }
        for p in &names {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(id) = name.strip_suffix(".json") {
                let blob = blobs.join(id);
                let meta = std::fs::read(p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
                let size = std::fs::metadata(&blob).ok().map(|m| m.len());
                match (meta, size) {
                    (Some(m), Some(s)) if s == m.info.size && id_of(&m.sor, &m.key) == id => {
                        let used = std::fs::metadata(p)
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        found.push((m, id.to_string(), s, used));
                    }
                    _ => {
                        let _ = std::fs::remove_file(p);
                        let _ = std::fs::remove_file(&blob);
                        rec.removed += 1;
                    }
                }
            }
        }
        for p in &names {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".json")
                && !blobs.join(format!("{name}.json")).exists()
                && p.exists()
            {
                std::fs::remove_file(p)?;
                rec.removed += 1;
            }
        }
        // Oldest metadata first, so the LRU order survives a restart roughly.
        found.sort_by_key(|f| f.3);
        let mut inner = Inner {
            lru: Lru::new(cap),
            metas: HashMap::new(),
        };
        let tier_root = root.to_path_buf();
        for (m, id, size, _) in found {
            for gone in inner.lru.insert_unreserved(&id, size) {
                inner.metas.remove(&gone);
                remove_files(&tier_root, &gone);
            }
            inner.metas.insert(id, m);
        }
        rec.entries = inner.metas.len();
        rec.bytes = inner.lru.used();
        Ok((
            Arc::new(DiskTier {
                root: tier_root,
                inner: Mutex::new(inner),
            }),
            rec,
        ))
    }

    pub fn blob_path(&self, id: &str) -> PathBuf {
        self.root.join("blobs").join(id)
    }

    /// The entry's metadata, marking it used.
    pub fn lookup(&self, id: &str) -> Option<Meta> {
        let mut g = self.inner.lock();
        let m = g.metas.get(id).cloned()?;
        g.lru.touch(id);
        Some(m)
    }

    pub fn peek(&self, id: &str) -> Option<Meta> {
        self.inner.lock().metas.get(id).cloned()
    }

    /// Starts a fill of `size` bytes; `None` when it cannot fit the cap.
    /// Returns how many entries were evicted to make room.
    pub async fn begin(self: &Arc<Self>, size: u64) -> std::io::Result<(Option<Fill>, usize)> {
        let (reserved, evicted) = {
            let mut g = self.inner.lock();
            let (r, ev) = g.lru.reserve(size);
            for id in &ev {
                g.metas.remove(id);
            }
            (r, ev)
        };
        for id in &evicted {
            remove_files(&self.root, id);
        }
        let Some(reserved) = reserved else {
            return Ok((None, evicted.len()));
        };
        let name = simcache_store::random::hex_id::<12>()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let path = self.root.join("tmp").join(name);
        // A second handle for a reader following the fill: opened now, so
        // the rename at commit cannot race it.
        let created = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || {
                let w = std::fs::File::create(&p)?;
                let r = std::fs::File::open(&p)?;
                Ok::<_, std::io::Error>((w, r))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
        };
        let (file, reader) = match created {
            Ok(f) => f,
            Err(e) => {
                self.inner.lock().lru.release(reserved);
                return Err(e);
            }
        };
        let progress = Arc::new(tokio::sync::watch::Sender::new(Progress::default()));
        let (tx, writer) = start_writer(file, progress.clone());
        Ok((
            Some(Fill {
                tier: self.clone(),
                reserved: Some(reserved),
                path,
                chunks: Some(tx),
                writer: Some(writer),
                reader: Arc::new(reader),
                progress,
            }),
            evicted.len(),
        ))
    }

    /// Records a successful revalidation.
    pub fn set_validated(&self, id: &str, at_ms: u64) {
        let meta = {
            let mut g = self.inner.lock();
            let Some(m) = g.metas.get_mut(id) else {
                return;
            };
            m.validated_at_ms = at_ms;
            m.clone()
        };
        if let Err(e) = write_meta(&self.root, id, &meta) {
            tracing::warn!(error = %e, "could not record a revalidation on disk");
        }
    }

    pub fn evict(&self, id: &str) -> bool {
        let had = {
            let mut g = self.inner.lock();
            g.metas.remove(id);
            g.lru.remove(id)
        };
        if had {
            remove_files(&self.root, id);
        }
        had
    }

    /// Evicts every entry of `sor` whose key starts with `prefix`.
    pub fn evict_prefix(&self, sor: &str, prefix: &str) -> usize {
        let ids: Vec<String> = {
            let mut g = self.inner.lock();
            let ids: Vec<String> = g
                .metas
                .iter()
                .filter(|(_, m)| m.sor == sor && m.key.starts_with(prefix))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                g.metas.remove(id);
                g.lru.remove(id);
            }
            ids
        };
        for id in &ids {
            remove_files(&self.root, id);
        }
        ids.len()
    }

    pub fn entries(&self, sor: &str) -> Vec<Meta> {
        let mut v: Vec<Meta> = self
            .inner
            .lock()
            .metas
            .values()
            .filter(|m| m.sor == sor)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// (bytes, objects) for one SOR.
    pub fn amounts(&self, sor: &str) -> (u64, usize) {
        let g = self.inner.lock();
        g.metas
            .values()
            .filter(|m| m.sor == sor)
            .fold((0, 0), |(b, n), m| (b + m.info.size, n + 1))
    }

    /// (bytes used, bytes reserved by fills in progress, objects).
    pub fn totals(&self) -> (u64, u64, usize) {
        let g = self.inner.lock();
        (g.lru.used(), g.lru.reserved(), g.lru.len())
    }
}

fn write_meta(root: &Path, id: &str, m: &Meta) -> std::io::Result<()> {
    let dir = root.join("blobs");
    let tmp = root.join("tmp").join(format!("{id}.json"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(m).map_err(std::io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))
}

fn remove_files(root: &Path, id: &str) {
    let blobs = root.join("blobs");
    // Metadata first: a blob without it is garbage at the next start.
    let _ = std::fs::remove_file(blobs.join(format!("{id}.json")));
    let _ = std::fs::remove_file(blobs.join(id));
}

/// A fill in progress. Hashing and writing run on a thread of their own,
/// fed through a bounded channel, so they overlap with receiving from the
/// SOR. Dropped without [`Fill::commit`], it deletes its temporary file and
/// gives back its reservation.
pub struct Fill {
    tier: Arc<DiskTier>,
    reserved: Option<Reserved>,
    path: PathBuf,
    chunks: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    writer: Option<Writer>,
    reader: Arc<std::fs::File>,
    progress: Arc<tokio::sync::watch::Sender<Progress>>,
}

/// How far a fill has come, for a reader following it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes in the file (readable through [`Growing::file`]).
    pub on_disk: u64,
    pub end: FillEnd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FillEnd {
    #[default]
    Writing,
    /// Length and MD5 checked, the blob is in the tier.
    Verified,
    /// Short, corrupt, or abandoned: the bytes must not be passed on whole.
    Failed,
}

/// A fill's file as it grows, and the news of how far it got.
#[derive(Clone)]
pub struct Growing {
    pub file: Arc<std::fs::File>,
    pub progress: tokio::sync::watch::Receiver<Progress>,
}

impl Growing {
    /// Waits for the fill's end; the file once its bytes were verified.
    pub async fn verified(mut self) -> Result<Arc<std::fs::File>, SourceError> {
        let end = self
            .progress
            .wait_for(|p| p.end != FillEnd::Writing)
            .await
            .map(|p| p.end)
            .unwrap_or(FillEnd::Failed);
        match end {
            FillEnd::Verified => Ok(self.file),
            _ => Err(SourceError::Corrupt(
                "the fill this read followed did not verify".into(),
            )),
        }
    }
}

/// The writer thread: bytes written and their MD5, once the channel closes.
type Writer = tokio::task::JoinHandle<std::io::Result<(u64, [u8; 16])>>;

/// Chunks in flight between the receiving task and the writer.
const FILL_QUEUE: usize = 32;

fn start_writer(
    file: std::fs::File,
    progress: Arc<tokio::sync::watch::Sender<Progress>>,
) -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Writer) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(FILL_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut md5 = md5::Md5::new();
        let mut written = 0u64;
        let mut told = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            md5.update(&chunk);
            written += chunk.len() as u64;
            out.write_all(&chunk)?;
            // What left the buffer is in the file: tell a follower.
            let on_disk = written - out.buffer().len() as u64;
            if on_disk > told {
                told = on_disk;
                progress.send_modify(|p| p.on_disk = on_disk);
            }
        }
        out.flush()?;
        progress.send_modify(|p| p.on_disk = written);
        Ok((written, md5.finalize().into()))
    });
    (tx, writer)
}

impl Fill {
    /// A handle for reading the fill while it grows.
    pub fn follow(&self) -> Growing {
        Growing {
            file: self.reader.clone(),
            progress: self.progress.subscribe(),
        }
    }

    pub async fn write(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        let Some(tx) = self.chunks.as_ref() else {
            return Err(std::io::Error::other("the fill is closed"));
        };
        // A full queue waits here, without a thread of its own.
        tx.send(chunk)
            .await
            .map_err(|_| std::io::Error::other("the cache writer stopped"))
    }

    /// Checks the bytes against `meta.info` and makes the blob visible.
    pub async fn commit(mut self, meta: Meta) -> Result<(), SourceError> {
        let io = |e: std::io::Error| SourceError::Unavailable(format!("cache disk: {e}"));
        self.chunks = None;
        let (written, digest) = match self.writer.take() {
            Some(w) => w
                .await
                .map_err(|e| SourceError::Unavailable(e.to_string()))?
                .map_err(io)?,
            None => return Err(SourceError::Unavailable("the fill is closed".into())),
        };
        if written != meta.info.size {
            return Err(SourceError::Corrupt(format!(
                "received {written} bytes, the SOR stated {}",
                meta.info.size
            )));
        }
        if let Some(want) = meta.info.md5()
            && digest != want
        {
            return Err(SourceError::Corrupt(
                "the MD5 of the bytes is not the ETag".into(),
            ));
        }
        let id = id_of(&meta.sor, &meta.key);
        let tier = self.tier.clone();
        let blob = tier.blob_path(&id);
        tokio::fs::rename(&self.path, &blob).await.map_err(io)?;
        let root = tier.root.clone();
        let m = meta.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || write_meta(&root, &id2, &m))
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?
            .map_err(io)?;
        let mut g = tier.inner.lock();
        if let Some(r) = self.reserved.take() {
            g.lru.commit(r, &id);
        }
        g.metas.insert(id, meta);
        drop(g);
        self.progress.send_modify(|p| p.end = FillEnd::Verified);
        Ok(())
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(r) = self.reserved.take() {
            self.progress.send_modify(|p| p.end = FillEnd::Failed);
            self.tier.inner.lock().lru.release(r);
            // The writer may still hold the file open; unlinking is enough.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, body: &[u8]) -> Meta {
        Meta {
            sor: "d".into(),
            key: key.into(),
            info: ObjectInfo {
                etag: format!("\"{}\"", hex::encode(md5::Md5::digest(body))),
                last_modified_ms: 1,
                size: body.len() as u64,
            },
            fetched_at_ms: 1,
            validated_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn fills_commit_check_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, rec) = DiskTier::open(dir.path(), 1000).unwrap();
        assert_eq!(rec, Recovered::default());
        let (f, _) = tier.begin(5).await.unwrap();
        let mut f = f.unwrap();
        f.write(bytes::Bytes::from_static(b"hello")).await.unwrap();
        f.commit(meta("a", b"hello")).await.unwrap();
        let id = id_of("d", "a");
        assert_eq!(std::fs::read(tier.blob_path(&id)).unwrap(), b"hello");
        // A wrong MD5 and a short body are refused and leave nothing.
        let (f, _) = tier.begin(5).await.unwrap();
        let mut f = f.unwrap();
        f.write(bytes::Bytes::from_static(b"hellO")).await.unwrap();
        let mut m = meta("b", b"hello");
        assert!(matches!(
            f.commit(m.clone()).await,
            Err(SourceError::Corrupt(_))
        ));
        let (f, _) = tier.begin(5).await.unwrap();
        let mut f = f.unwrap();
        f.write(bytes::Bytes::from_static(b"hel")).await.unwrap();
        m.key = "c".into();
        assert!(matches!(f.commit(m).await, Err(SourceError::Corrupt(_))));
        assert_eq!(tier.totals(), (5, 0, 1));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // An interrupted fill and an orphan blob are cleaned at the next start.
        std::fs::write(dir.path().join("tmp/partial"), b"xx").unwrap();
        std::fs::write(dir.path().join("blobs").join(id_of("d", "orphan")), b"xx").unwrap();
        drop(tier);
        let (tier, rec) = DiskTier::open(dir.path(), 1000).unwrap();
        assert_eq!(
            rec,
            Recovered {
                entries: 1,
                bytes: 5,
                removed: 2
            }
        );
        assert_eq!(tier.lookup(&id).unwrap().key, "a");
    }

    #[tokio::test]
    async fn a_follower_sees_the_bytes_land_and_how_the_fill_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 1000).unwrap();
        let (f, _) = tier.begin(5).await.unwrap();
        let mut f = f.unwrap();
        let mut g = f.follow();
        f.write(bytes::Bytes::from_static(b"hello")).await.unwrap();
        let ok = tokio::spawn(g.clone().verified());
        f.commit(meta("a", b"hello")).await.unwrap();
        let p = *g
            .progress
            .wait_for(|p| p.end != FillEnd::Writing)
            .await
            .unwrap();
        assert_eq!(
            p,
            Progress {
                on_disk: 5,
                end: FillEnd::Verified
            }
        );
        let file = ok.await.unwrap().unwrap();
        let mut buf = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        // A wrong MD5 ends the fill Failed, and so does a fill given up.
        let (f, _) = tier.begin(5).await.unwrap();
        let mut f = f.unwrap();
        let g = f.follow();
        f.write(bytes::Bytes::from_static(b"hellO")).await.unwrap();
        assert!(f.commit(meta("b", b"hello")).await.is_err());
        assert!(matches!(g.verified().await, Err(SourceError::Corrupt(_))));
        let (f, _) = tier.begin(5).await.unwrap();
        let g = f.as_ref().unwrap().follow();
        drop(f);
        assert_eq!(g.progress.borrow().end, FillEnd::Failed);
    }

    #[tokio::test]
    async fn eviction_keeps_the_cap_and_open_readers() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 10).unwrap();
        for k in ["a", "b"] {
            let (f, _) = tier.begin(5).await.unwrap();
            let mut f = f.unwrap();
            f.write(bytes::Bytes::from_static(b"12345")).await.unwrap();
            f.commit(meta(k, b"12345")).await.unwrap();
        }
        let reader = std::fs::File::open(tier.blob_path(&id_of("d", "a"))).unwrap();
        let (f, evicted) = tier.begin(5).await.unwrap();
        assert_eq!(evicted, 1);
        drop(f);
        assert!(tier.peek(&id_of("d", "a")).is_none());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &reader, &mut s).unwrap();
        assert_eq!(s, "12345", "an open reader keeps its file");
        assert!(tier.begin(11).await.unwrap().0.is_none());
        assert_eq!(tier.evict_prefix("d", ""), 1);
        assert_eq!(tier.totals(), (0, 0, 0));
    }
}
