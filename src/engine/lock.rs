//! Per-target run locks: two drills touching the same target at once are refused.
//!
//! A lock is an `flock` on `<lock_dir>/<target>.lock`, so it is released by the
//! kernel when the engine dies, however it dies. The holder writes its run id and pid
//! into the file so the refusal can say who holds it.
//!
//! The lock directory must be the same for every engine on the machine, whatever its
//! state dir (root and other users have different default state dirs; a drill that
//! locked under its own state dir did not see another one freezing the same
//! process). By default it is `/run/lock/firedrill`: `/run/lock` is usually
//! world-writable and sticky, the `firedrill` directory is created mode 1777 and
//! each lock file mode 0666, so root's and other users' engines lock the same files.
//! (Where `/run/lock` is root's only, as with plain systemd, users share it once a
//! root engine has created the directory; until then they fall back to a per-user
//! one, with a warning.) Tests and containers point `--lock-dir` /
//! `FIREDRILL_LOCK_DIR` elsewhere.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::unistd::AccessFlags;

/// The machine-wide lock directory.
pub(crate) const SHARED_DIR: &str = "/run/lock/firedrill";

/// Held locks; dropping releases them.
pub struct TargetLocks {
    _held: Vec<Flock<File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "target `{key}` is in use by another drill ({holder}); refusing to run two drills on one target at once"
    )]
    Busy { key: String, holder: String },
    #[error("cannot create lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// See [`crate::engine::default_lock_dir`].
pub(crate) fn default_dir() -> PathBuf {
    let shared = Path::new(SHARED_DIR);
    let why = match usable(shared) {
        Ok(()) => return shared.to_path_buf(),
        Err(why) => why,
    };
    let fallback = match std::env::var("XDG_RUNTIME_DIR") {
        Ok(x) if !x.is_empty() => PathBuf::from(x).join("firedrill"),
        _ => PathBuf::from(format!("/tmp/firedrill-locks-{}", nix::unistd::geteuid())),
    };
    tracing::warn!(
        "locks in {}: {SHARED_DIR} cannot be used ({why}); drills of other users will not see these locks",
        fallback.display()
    );
    fallback
}

/// Whether this user can lock in `dir`, or create it (and any missing parent: root
/// makes `/run/lock` where a container lacks it, and the 1777 `firedrill` directory
/// in it still lets other users in).
fn usable(dir: &Path) -> Result<(), String> {
    let rwx = AccessFlags::W_OK | AccessFlags::X_OK;
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .ok_or_else(|| format!("no directory above {}", dir.display()))?;
    nix::unistd::access(existing, rwx).map_err(|e| format!("{}: {}", existing.display(), e.desc()))
}

/// Creates the lock directory, shared by every user (mode 1777, like `/run/lock`).
fn ensure_dir(dir: &Path) -> Result<(), LockError> {
    if dir.is_dir() {
        return Ok(());
    }
    let io = |source| LockError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // The umask took bits off; put them back. Fails harmlessly when another user's
    // engine created the directory in the meantime.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    Ok(())
}

/// Opens (or creates, mode 0666) a lock file without `O_CREAT` on an existing one:
/// in a sticky world-writable directory `fs.protected_regular` refuses `O_CREAT` on
/// another user's file, which would keep a non-root engine from root's locks. Never
/// follows a symlink planted in the shared directory.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let nofollow = OFlag::O_NOFOLLOW.bits();
    loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nofollow)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // A lock file someone made without write permission for us: flock works
            // on a read-only descriptor too (we only cannot sign it).
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return OpenOptions::new()
                    .read(true)
                    .custom_flags(nofollow)
                    .open(path);
            }
            Err(e) => return Err(e),
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(nofollow)
            .open(path)
        {
            Ok(f) => {
                f.set_permissions(std::fs::Permissions::from_mode(0o666))?;
                return Ok(f);
            }
            // Another engine created it between our two opens: open theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A file name for a lock key: target names come from scenarios, and a `/` or `..`
/// must not lead out of the shared directory. Two keys that map alike only lock
/// more than needed, never less.
fn file_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.lock", safe.trim_start_matches('.'))
}

/// Takes an exclusive lock for each key (sorted, so two engines never deadlock).
pub fn acquire(lock_dir: &Path, keys: &[String], run_id: &str) -> Result<TargetLocks, LockError> {
    ensure_dir(lock_dir)?;
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let mut held = Vec::new();
    for key in keys {
        let path = lock_dir.join(file_name(&key));
        let file = open_lock_file(&path).map_err(|source| LockError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                let _ = f.set_len(0);
                let _ = f.rewind();
                let _ = write!(f, "run {run_id} pid {}", std::process::id());
                held.push(f);
            }
            Err((mut f, _)) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                return Err(LockError::Busy {
                    key,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder
                    },
                });
            }
        }
    }
    Ok(TargetLocks { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec!["local".to_string()];
        let first = acquire(dir.path(), &keys, "run-a").unwrap();
        match acquire(dir.path(), &keys, "run-b") {
            Err(LockError::Busy { key, holder }) => {
                assert_eq!(key, "local");
                assert!(holder.contains("run-a"), "{holder}");
            }
            other => panic!("expected Busy, got {:?}", other.is_ok()),
        }
        drop(first);
        acquire(dir.path(), &keys, "run-b").unwrap();
    }

    #[test]
    fn lock_dir_and_files_are_open_to_every_user() {
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("firedrill");
        let _held = acquire(&locks, &["local".to_string()], "r1").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&locks), 0o1777);
        assert_eq!(mode(&locks.join("local.lock")), 0o666);
    }

    #[test]
    fn a_target_name_cannot_lead_out_of_the_lock_dir() {
        assert_eq!(file_name("netns-../../etc/x"), "netns-.._.._etc_x.lock");
        assert_eq!(file_name("../x"), "_x.lock");
        assert!(!file_name("..").contains('/'));
    }

    #[test]
    fn the_default_is_machine_wide_for_root() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var("CI").is_err(), "this test needs root in CI");
            eprintln!("skipped: needs root");
            return;
        }
        assert_eq!(default_dir(), Path::new(SHARED_DIR));
    }
}
