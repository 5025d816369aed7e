//! The writer lock: at most one process writes a store directory at a time.
//!
//! Batch schedulers retry: a requeued Slurm task or a restarted Kubernetes pod may start while
//! its predecessor still writes the same directory. Every writer (label, `--resume`, `--force`,
//! merge into a directory) first takes an exclusive OS advisory lock (`flock` on Unix, through
//! `std::fs::File::try_lock`) on `writer.lock` in the store directory and holds it for its whole
//! life. The lock file also names its holder (host, pid, start time) so that the process refused
//! can say whom it waited for. The operating system drops the lock when its holder dies, even by
//! SIGKILL, so a stale file never blocks anyone; the file itself is never removed (removing it
//! would let two processes lock two different files of the same name).
//!
//! This owns only the lock; it never reads or writes store contents.

use crate::error::{Result, StoreError, io};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in a store directory.
pub const LOCK_FILE: &str = "writer.lock";

/// Who holds a writer lock, as its lock file records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub host: String,
    pub pid: u32,
    /// RFC 3339 time the holder took the lock.
    pub started: String,
}

impl LockHolder {
    /// This process, now.
    pub fn this_process() -> Self {
        LockHolder {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started: formats::manifest::now_rfc3339(),
        }
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} (since {})",
            self.pid, self.host, self.started
        )
    }
}

/// An exclusive lock on a store directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct WriterLock {
    dir: PathBuf,
    _file: File,
}

impl WriterLock {
    /// Takes the writer lock of `dir` (created if missing), or fails at once with
    /// [`StoreError::Locked`] naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's name stays readable until the lock is ours
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder: settled_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    path,
                    source: std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot lock the store for writing ({e}); on a file system without \
                             advisory locks, write to local disk and copy the finished store"
                        ),
                    ),
                });
            }
        }
        let me = serde_json::to_string(&LockHolder::this_process()).expect("plain struct");
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(me.as_bytes())?;
            f.write_all(b"\n")
        };
        write(&mut file).map_err(io(&path))?;
        Ok(WriterLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The holder named in a lock file that another process holds. A holder writes its name just
/// after it takes the lock, so a process refused at that instant may find the file empty, or
/// still naming an earlier holder that has exited: it looks again for up to a second, until the
/// file names a process that is alive (or on another host, where that cannot be checked).
fn settled_holder(file: &mut File) -> Option<LockHolder> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let here = gethostname::gethostname().to_string_lossy().into_owned();
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        let holder: Option<LockHolder> = read.ok().and_then(|_| serde_json::from_str(&text).ok());
        let settled = holder
            .as_ref()
            .is_some_and(|h| h.host != here || process_alive(h.pid));
        if settled || std::time::Instant::now() >= deadline {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether process `pid` exists on this host (always true where that cannot be told).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The last process that took the writer lock of `dir`, as its lock file says (it may have
/// finished or died since). Readers never lock: a probe could make a starting writer fail.
pub fn last_holder(dir: &Path) -> Option<LockHolder> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_the_lock_returns_after_drop() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("store");
        let first = WriterLock::acquire(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        // flock locks belong to the open file description: a second open in the same process
        // conflicts exactly as another process would.
        let err = WriterLock::acquire(&dir).unwrap_err();
        let me = std::process::id();
        match &err {
            StoreError::Locked { holder, .. } => {
                let h = holder.as_ref().expect("holder recorded");
                assert_eq!(h.pid, me);
                assert!(!h.host.is_empty());
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("pid {me}")), "{text}");
        assert!(text.contains("is being written by"), "{text}");
        drop(first);
        assert_eq!(last_holder(&dir).unwrap().pid, me);
        let again = WriterLock::acquire(&dir).unwrap();
        drop(again);
        // The lock file stays: removing it would let two writers lock different files.
        assert!(dir.join(LOCK_FILE).exists());
    }
}
