//! The on-disk cache of compiled policies.
//!
//! Compiling a policy takes tens of milliseconds; loading the compiled artefact
//! takes tens of microseconds. But loading it means running its machine code as
//! it is (`Component::deserialize` is `unsafe`): whoever can write an artefact
//! can run code in the proxy. What the cache trusts, and how it checks it:
//!
//! - **The directory.** It must belong to the user running Shadowcat and be
//!   writable by no one else: it is created `0700`, and a directory owned by
//!   another user, or writable by group or others, is refused with a WARN line
//!   (policies are then compiled on every load and nothing is written). The
//!   check runs again before every read, so loosening the mode later takes
//!   effect. Only the directory itself is checked, not its parents.
//! - **A digest recorded at compile time.** Every artefact starts with a header
//!   holding the sha256 of the component it was compiled from and the sha256 of
//!   the compiled bytes. Both are verified before deserializing: a truncated or
//!   corrupted file, or the artefact of another component renamed to this key,
//!   is refused, logged, and replaced by a fresh compile.
//! - **wasmtime's own header check**, which refuses artefacts of another
//!   wasmtime version or engine configuration (also part of the file name).
//!
//! What it does not defend against: someone who can already write the directory
//! as the same user can write a matching header too. That user can run code as
//! you anyway; the digest is an integrity check, not authentication.
//!
//! Artefacts are written to a temporary file in the directory, named uniquely
//! per process, thread and write and created exclusively, then renamed into
//! place: concurrent writers (threads or processes) never see or leave half a
//! file, and never write through a file someone planted under that name.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"SCATCW01";
const DIGEST: usize = 32;
const HEADER: usize = MAGIC.len() + 2 * DIGEST;

/// Why the cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheRefused {
    #[error("cannot create or read {}: {error}", dir.display())]
    Io { dir: PathBuf, error: std::io::Error },
    #[error("{} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("{} is owned by uid {owner}, not by this user (uid {uid})", dir.display())]
    NotOwned { dir: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{} is writable by {} (mode {mode:o}); only its owner may write a directory whose \
         files are run as code (chmod 700 it)",
        dir.display(), if mode & 0o002 != 0 { "others" } else { "its group" }
    )]
    Writable { dir: PathBuf, mode: u32 },
}

/// Why a cached artefact was not used.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactRejected {
    #[error("shorter than its header")]
    Truncated,
    #[error("no Shadowcat artefact header")]
    NoHeader,
    #[error("compiled from another component than its name says")]
    OtherSource,
    #[error("its bytes do not match the digest recorded when it was compiled")]
    Digest,
}

/// A verified cache directory.
#[derive(Debug, Clone)]
pub struct ArtefactCache {
    dir: PathBuf,
    /// The owner this process's files get, which the directory must have.
    owner: u32,
}

impl ArtefactCache {
    /// Creates `dir` (mode 0700) if missing and checks who may write it.
    pub fn open(dir: PathBuf) -> Result<Self, CacheRefused> {
        let io = |error| CacheRefused::Io {
            dir: dir.clone(),
            error,
        };
        create_private_dir(&dir).map_err(io)?;
        let owner = own_uid(&dir).map_err(io)?;
        let cache = Self { dir, owner };
        cache.check()?;
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory is still one only this user can write.
    pub fn check(&self) -> Result<(), CacheRefused> {
        let meta = std::fs::metadata(&self.dir).map_err(|error| CacheRefused::Io {
            dir: self.dir.clone(),
            error,
        })?;
        if !meta.is_dir() {
            return Err(CacheRefused::NotADirectory {
                dir: self.dir.clone(),
            });
        }
        check_private(&self.dir, &meta, self.owner)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The verified compiled bytes stored under `key` for the component whose
    /// sha256 is `source`; `Ok(None)` when there is none.
    pub fn read(&self, key: &str, source: &[u8; DIGEST]) -> Result<Option<Vec<u8>>, ArtefactError> {
        self.check().map_err(ArtefactError::Refused)?;
        let path = self.path(key);
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArtefactError::Io(e)),
        };
        verify(&bytes, source).map_err(|reason| ArtefactError::Rejected { path, reason })?;
        bytes.drain(..HEADER);
        Ok(Some(bytes))
    }

    /// Stores `artefact` under `key`, with its header.
    pub fn write(
        &self,
        key: &str,
        source: &[u8; DIGEST],
        artefact: &[u8],
    ) -> Result<(), ArtefactError> {
        self.check().map_err(ArtefactError::Refused)?;
        let (tmp, mut file) = create_unique(&self.dir, key).map_err(ArtefactError::Io)?;
        let written = (|| {
            file.write_all(MAGIC)?;
            file.write_all(source)?;
            file.write_all(&Sha256::digest(artefact))?;
            file.write_all(artefact)?;
            file.sync_data()?;
            drop(file);
            std::fs::rename(&tmp, self.path(key))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(ArtefactError::Io)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    #[error(transparent)]
    Refused(CacheRefused),
    #[error("cached policy {} refused: {reason}", path.display())]
    Rejected {
        path: PathBuf,
        reason: ArtefactRejected,
    },
    #[error(transparent)]
    Io(std::io::Error),
}

fn verify(bytes: &[u8], source: &[u8; DIGEST]) -> Result<(), ArtefactRejected> {
    if bytes.len() < HEADER {
        return Err(ArtefactRejected::Truncated);
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(ArtefactRejected::NoHeader);
    }
    let (recorded_source, rest) = rest.split_at(DIGEST);
    let (recorded_digest, artefact) = rest.split_at(DIGEST);
    if recorded_source != source {
        return Err(ArtefactRejected::OtherSource);
    }
    if Sha256::digest(artefact).as_slice() != recorded_digest {
        return Err(ArtefactRejected::Digest);
    }
    Ok(())
}

/// A new file in `dir` whose name no other thread or process uses: the key,
/// the process id, the thread id and a per-process counter. Created with
/// `create_new`, so an existing file (or a planted symlink) is never written.
fn create_unique(dir: &Path, key: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".{key}.{}-{thread}-{n}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path)?;
    Ok((path, file))
}

/// The owner a file this process creates in `dir` gets (its effective user),
/// found by creating one: std has no `geteuid`, and a directory this process
/// cannot create a file in is of no use as a cache anyway.
#[cfg(unix)]
fn own_uid(dir: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let (path, file) = create_unique(dir, "owner-probe")?;
    let uid = file.metadata().map(|m| m.uid());
    drop(file);
    let _ = std::fs::remove_file(&path);
    uid
}

#[cfg(not(unix))]
fn own_uid(_dir: &Path) -> std::io::Result<u32> {
    Ok(0)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn check_private(dir: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), CacheRefused> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != uid {
        return Err(CacheRefused::NotOwned {
            dir: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(CacheRefused::Writable {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_dir: &Path, _meta: &std::fs::Metadata, _uid: u32) -> Result<(), CacheRefused> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_cache_header_binds_source_and_artefact() {
        let source = [7u8; DIGEST];
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&source);
        file.extend_from_slice(&Sha256::digest(b"machine code"));
        file.extend_from_slice(b"machine code");
        assert!(verify(&file, &source).is_ok());
        assert!(matches!(
            verify(&file, &[8u8; DIGEST]),
            Err(ArtefactRejected::OtherSource)
        ));
        let last = file.len() - 1;
        file[last] ^= 1;
        assert!(matches!(
            verify(&file, &source),
            Err(ArtefactRejected::Digest)
        ));
        assert!(matches!(
            verify(&file[..10], &source),
            Err(ArtefactRejected::Truncated)
        ));
        assert!(matches!(
            verify(&[0u8; HEADER], &source),
            Err(ArtefactRejected::NoHeader)
        ));
    }
}
