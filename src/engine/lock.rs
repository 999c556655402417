//! Per-target run locks: two drills touching the same target at once are refused.
//!
//! A lock is an `flock` on `<state_dir>/locks/<target>.lock`, so it is released by the
//! kernel when the engine dies, however it dies. The holder writes its run id and pid
//! into the file so the refusal can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

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

/// Takes an exclusive lock for each key (sorted, so two engines never deadlock).
pub fn acquire(state_dir: &Path, keys: &[String], run_id: &str) -> Result<TargetLocks, LockError> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(|source| LockError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let mut held = Vec::new();
    for key in keys {
        let path = dir.join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Io {
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
}
