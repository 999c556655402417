//! The ledger: an append-only, fsync'd JSON-lines file of undo records, one per run.
//!
//! The engine appends a fault's undo record *before* the fault takes effect and marks
//! it reverted afterwards, so after any crash the ledger says exactly what may still
//! be in effect. `firedrill recover` replays the records that are not marked reverted,
//! newest first.
//!
//! One ledger holds exactly one run: creating a ledger whose run id is taken is
//! refused, because two runs numbering their records from 1 in one file would let
//! one run's revert hide the other's fault. A crash mid-append leaves a torn last
//! line; it is ignored when reading and cut off before anything is appended again.

use std::fs::{File, OpenOptions};
use std::io::Write;
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
        /// The run's report directory, so that `recover` writes the record of an
        /// interrupted run where the run would have. Absent in older ledgers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_dir: Option<String>,
        /// Who ran it, where, at which level, from which file: the record of an
        /// interrupted run says so too. Absent in older ledgers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<RunIdentity>,
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

/// What identifies a run in its reports, kept in the ledger for `recover`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunIdentity {
    pub level: crate::scenario::Level,
    /// Scenario file as given.
    pub file: String,
    /// SHA-256 of the scenario file, hex.
    pub sha256: String,
    pub host: String,
    pub operator: String,
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
    #[error("ledger {path}:{line} (byte {offset}): unreadable record: {source}")]
    Corrupt {
        path: String,
        line: usize,
        /// Byte offset of the line's first byte, for a human with a hex editor.
        offset: u64,
        source: serde_json::Error,
    },
    #[error(
        "run id `{run_id}` is already taken: its ledger {path} exists; give each run a new id (a reused id would mix this run's undo records with an earlier run's)"
    )]
    RunIdInUse { run_id: String, path: String },
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
    /// the file itself survives a crash, not only its contents). An existing ledger is
    /// never appended to: a run id names exactly one run ([`LedgerError::RunIdInUse`]).
    pub fn create(state_dir: &Path, run_id: &str) -> Result<Self, LedgerError> {
        let dir = state_dir.join("runs").join(run_id);
        let io = |source| LedgerError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join("ledger.jsonl");
        let file = match OpenOptions::new().create_new(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LedgerError::RunIdInUse {
                    run_id: run_id.to_string(),
                    path: path.display().to_string(),
                });
            }
            Err(e) => return Err(io(e)),
        };
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

    /// Removes a ledger this process has just created and not yet written to (the
    /// run was refused before it started, e.g. its target is locked).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Reopens an existing ledger to append recovery results. A torn last line (a
    /// crash mid-append) is cut off first, or the next entry would be glued onto it
    /// and make both unreadable; the cut is logged with its size.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dropped) = cut_torn_tail(path)? {
            tracing::warn!(
                ledger = %path.display(),
                bytes = dropped,
                "ledger {}: dropped a torn last line ({dropped} bytes) left by a crash mid-write; the record it held was never complete, so its fault never took effect",
                path.display()
            );
        }
        let next_seq = scan(path)?
            .entries
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

    /// Appends one entry and waits until it is on disk. A write that fails half way
    /// (e.g. a full disk) is cut back off, so that it cannot tear the next entry.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        let mut line = serde_json::to_string(entry).expect("ledger entries serialise");
        line.push('\n');
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let len = self.file.metadata().map_err(io)?.len();
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            let _ = self.file.set_len(len);
            return Err(io(e));
        }
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

/// Truncates a ledger to its last complete line; returns how many bytes were cut.
fn cut_torn_tail(path: &Path) -> Result<Option<u64>, LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let keep = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if keep == bytes.len() {
        return Ok(None);
    }
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(keep as u64).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(Some((bytes.len() - keep) as u64))
}

/// A ledger as far as it can be read.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every readable entry, in file order.
    pub entries: Vec<Entry>,
    /// Complete lines that do not parse ([`LedgerError::Corrupt`]), in file order.
    pub unreadable: Vec<LedgerError>,
    /// Size of a last line without its newline: a write cut short by a crash.
    pub torn_tail: Option<u64>,
}

/// Reads every entry it can. An unreadable line does not hide the lines after it:
/// `recover` must still revert every record it can read.
pub fn scan(path: &Path) -> Result<Scan, LedgerError> {
    let bytes = std::fs::read(path).map_err(|source| LedgerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Scan::default();
    let mut offset = 0usize;
    for (i, chunk) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let line_start = offset;
        offset += chunk.len();
        let Some(line) = chunk.strip_suffix(b"\n") else {
            // The last line, with no newline: the writer died mid-write. Its record
            // was never fsync'd, so the fault it describes never took effect.
            out.torn_tail = Some(chunk.len() as u64);
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(e) => out.entries.push(e),
            Err(source) => out.unreadable.push(LedgerError::Corrupt {
                path: path.display().to_string(),
                line: i + 1,
                offset: line_start as u64,
                source,
            }),
        }
    }
    Ok(out)
}

/// Reads every entry of a ledger, refusing one with an unreadable line. A torn last
/// line is ignored (see [`scan`]).
pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let mut s = scan(path)?;
    if s.unreadable.is_empty() {
        Ok(s.entries)
    } else {
        Err(s.unreadable.swap_remove(0))
    }
}

/// Faults recorded but not reverted, newest first (the order to revert them in).
///
/// A `Reverted` entry marks the latest not-yet-reverted `Inject` with its sequence
/// number written *before* it, never a later one: a ledger written by an older
/// version that let two runs share a run id numbers both runs from 1, and the first
/// run's revert must not hide the second run's fault.
pub fn pending(entries: &[Entry]) -> Vec<Pending> {
    let mut open: Vec<Option<Pending>> = Vec::new();
    let mut by_seq: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for e in entries {
        match e {
            Entry::Inject {
                seq,
                step,
                target,
                undo,
                ..
            } => {
                by_seq.entry(*seq).or_default().push(open.len());
                open.push(Some(Pending {
                    seq: *seq,
                    step: step.clone(),
                    target: target.clone(),
                    undo: undo.clone(),
                }));
            }
            Entry::Reverted { seq, .. } => {
                if let Some(i) = by_seq.get_mut(seq).and_then(Vec::pop) {
                    open[i] = None;
                }
            }
            _ => {}
        }
    }
    open.into_iter().rev().flatten().collect()
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
pub(super) mod tests {
    use super::*;
    use crate::fault::process_kill::{ProcRef, Signal, Undo as PkUndo};

    /// An undo record to put in a test ledger: SIGSTOP of `pid` on this host.
    pub(in crate::engine) fn undo(pid: u32) -> Undo {
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
            cgroup: None,
        })
    }

    #[test]
    fn a_started_entry_without_the_newer_fields_still_reads() {
        let line = r#"{"op":"started","run_id":"r1","scenario":"s","pid":1,"pid_start":2,"at":"2025-03-14T02:10:00.000Z"}"#;
        match serde_json::from_str::<Entry>(line).unwrap() {
            Entry::Started {
                report_dir,
                identity,
                ..
            } => assert!(report_dir.is_none() && identity.is_none()),
            other => panic!("{other:?}"),
        }
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

    #[test]
    fn pending_does_not_match_a_revert_of_an_earlier_run() {
        // A ledger written by an older version that let a run id be reused: both
        // runs numbered their records from 1.
        let at = || now_rfc3339();
        let inject = |step: &str, pid| Entry::Inject {
            seq: 1,
            step: step.into(),
            target: Target::Local,
            undo: undo(pid),
            at: at(),
        };
        let mut entries = vec![
            inject("first run", 1),
            Entry::Reverted { seq: 1, at: at() },
            Entry::Finished { at: at() },
            inject("second run", 2),
        ];
        let p = pending(&entries);
        assert_eq!(
            p.iter().map(|p| p.step.as_str()).collect::<Vec<_>>(),
            ["second run"]
        );
        // A revert written after it (by `recover`) is the second run's.
        entries.push(Entry::Reverted { seq: 1, at: at() });
        assert!(pending(&entries).is_empty());
    }

    #[test]
    fn create_refuses_an_existing_run_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let before = std::fs::read(l.path()).unwrap();
        match Ledger::create(dir.path(), "r1") {
            Err(LedgerError::RunIdInUse { run_id, path }) => {
                assert_eq!(run_id, "r1");
                assert_eq!(path, l.path().display().to_string());
            }
            other => panic!("expected RunIdInUse, got {:?}", other.err()),
        }
        assert_eq!(
            std::fs::read(l.path()).unwrap(),
            before,
            "ledger was touched"
        );
    }

    #[test]
    fn scan_reads_past_a_corrupt_line_and_locates_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let path = l.path().to_path_buf();
        let first = std::fs::read(&path).unwrap().len() as u64;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"inj\n")
            .unwrap();
        l.record_inject("b", &Target::Local, &undo(2)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"rev")
            .unwrap();
        let s = scan(&path).unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.torn_tail, Some(10));
        assert_eq!(s.unreadable.len(), 1);
        assert!(matches!(
            s.unreadable[0],
            LedgerError::Corrupt { line: 2, offset, .. } if offset == first
        ));
        let msg = s.unreadable[0].to_string();
        assert!(
            msg.starts_with(&format!(
                "ledger {}:2 (byte {first}): unreadable record",
                path.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn open_cuts_a_torn_last_line_so_the_next_entry_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &undo(1)).unwrap();
        let path = l.path().to_path_buf();
        drop(l);
        let clean = std::fs::read(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"reverted\",\"se")
            .unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), clean);
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let s = scan(&path).unwrap();
        assert!(s.unreadable.is_empty() && s.torn_tail.is_none());
        assert!(pending(&s.entries).is_empty());
    }
}
