//! The ledger: an append-only, fsync'd JSON-lines file of undo records, one per run.
//!
//! The engine appends a fault's undo record *before* the fault takes effect and marks
//! it reverted afterwards, so after any crash the ledger says exactly what may still
//! be in effect. `firedrill recover` replays the records that are not marked reverted,
//! newest first.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::Undo;
use crate::target::Target;

/// One line of the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// The run started; `pid`/`pid_start` identify the engine so `recover` can tell a
    /// live run from a dead one.
    Started {
        run_id: String,
        scenario: String,
        pid: u32,
        pid_start: u64,
        at: String,
    },
    /// An undo record, written before the fault takes effect.
    Inject {
        seq: u64,
        step: String,
        target: Target,
        undo: Undo,
        at: String,
    },
    /// The fault with this sequence number was reverted.
    Reverted { seq: u64, at: String },
    /// Reverting failed; the record stays pending.
    RevertFailed { seq: u64, error: String, at: String },
    /// The run ended (cleanly or not); pending records may remain.
    Finished { at: String },
}

/// A fault that may still be in effect.
#[derive(Clone, Debug)]
pub struct Pending {
    pub seq: u64,
    pub step: String,
    pub target: Target,
    pub undo: Undo,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("ledger {path}:{line}: unreadable entry: {source}")]
    Corrupt {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// An open ledger for appending.
pub struct Ledger {
    path: PathBuf,
    file: File,
    next_seq: u64,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Ledger {
    /// Creates `<state_dir>/runs/<run_id>/ledger.jsonl` (and fsyncs the directories, so
    /// the file itself survives a crash, not only its contents).
    pub fn create(state_dir: &Path, run_id: &str) -> Result<Self, LedgerError> {
        let dir = state_dir.join("runs").join(run_id);
        let io = |source| LedgerError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join("ledger.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        for d in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
            if let Ok(f) = File::open(d) {
                let _ = f.sync_all();
            }
        }
        Ok(Ledger {
            path,
            file,
            next_seq: 1,
        })
    }

    /// Reopens an existing ledger to append recovery results.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let entries = read(path)?;
        let next_seq = entries
            .iter()
            .filter_map(|e| {
                if let Entry::Inject { seq, .. } = e {
                    Some(*seq)
                } else {
                    None
                }
            })
            .max()
            .unwrap_or(0)
            + 1;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| LedgerError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Ledger {
            path: path.to_path_buf(),
            file,
            next_seq,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and waits until it is on disk.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        let mut line = serde_json::to_string(entry).expect("ledger entries serialise");
        line.push('\n');
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Appends an undo record; returns its sequence number.
    pub fn record_inject(
        &mut self,
        step: &str,
        target: &Target,
        undo: &Undo,
    ) -> Result<u64, LedgerError> {
        let seq = self.next_seq;
        self.append(&Entry::Inject {
            seq,
            step: step.into(),
            target: target.clone(),
            undo: undo.clone(),
            at: now_rfc3339(),
        })?;
        self.next_seq += 1;
        Ok(seq)
    }
}

/// Reads every entry of a ledger. A torn last line (crash mid-write) is ignored: the
/// record it held was never fsync'd, so its fault never took effect.
pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let file = File::open(path).map_err(|source| LedgerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| LedgerError::Io {
            path: path.display().to_string(),
            source,
        })?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == lines.len() => break,
            Err(source) => {
                return Err(LedgerError::Corrupt {
                    path: path.display().to_string(),
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Faults recorded but not reverted, newest first (the order to revert them in).
pub fn pending(entries: &[Entry]) -> Vec<Pending> {
    let reverted: std::collections::HashSet<u64> = entries
        .iter()
        .filter_map(|e| {
            if let Entry::Reverted { seq, .. } = e {
                Some(*seq)
            } else {
                None
            }
        })
        .collect();
    let mut out: Vec<Pending> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Inject {
                seq,
                step,
                target,
                undo,
                ..
            } if !reverted.contains(seq) => Some(Pending {
                seq: *seq,
                step: step.clone(),
                target: target.clone(),
                undo: undo.clone(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.seq));
    out
}

/// Every ledger under a state directory: `(run_id, path)`, oldest run first.
pub fn all_ledgers(state_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(state_dir.join("runs"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let p = e.path().join("ledger.jsonl");
            p.exists()
                .then(|| (e.file_name().to_string_lossy().into_owned(), p))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::process_kill::{ProcRef, Signal, Undo as PkUndo};

    fn undo(pid: u32) -> Undo {
        Undo::ProcessKill(PkUndo {
            target: Target::Local,
            signal: Signal::Stop,
            processes: vec![ProcRef {
                pid,
                start_time: 1,
                comm: "x".into(),
            }],
            deadman_tag: None,
            source: None,
        })
    }

    #[test]
    fn pending_is_newest_first_and_skips_reverted() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let _b = l.record_inject("b", &Target::Local, &undo(2)).unwrap();
        let _c = l.record_inject("c", &Target::Local, &undo(3)).unwrap();
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let entries = read(l.path()).unwrap();
        let p = pending(&entries);
        assert_eq!(
            p.iter().map(|p| p.step.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
    }

    #[test]
    fn torn_last_line_is_ignored_but_corruption_elsewhere_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let path = l.path().to_path_buf();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"inj")
            .unwrap();
        assert_eq!(pending(&read(&path).unwrap()).len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}\n")).unwrap();
        assert!(matches!(
            read(&path),
            Err(LedgerError::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn reopen_continues_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let path = l.path().to_path_buf();
        drop(l);
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.record_inject("b", &Target::Local, &undo(2)).unwrap(), 2);
    }
}
