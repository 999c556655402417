//! Where a run's reports go, and how they get there.
//!
//! The reports are the drill's evidence, so two rules: the run's report directory is
//! created and proven writable (a probe file written, fsync'd and removed) *before*
//! anything is injected, and every file is written atomically (a temp file in the same
//! directory, fsync'd, then renamed over the final name, then the directory fsync'd).
//! A full disk or a vanished directory therefore leaves either a complete file or
//! none, never a truncated `journal.json` that looks valid.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use super::atomic::write_atomic;
use super::render::{Format, ReportError, render};
use crate::model::RunRecord;

/// The files of a run, in the order they are written: the journal first, as it is
/// the evidence every other file can be rendered again from.
pub const REPORT_FILES: [(&str, Format); 4] = [
    ("journal.json", Format::Json),
    ("report.html", Format::Html),
    ("report.md", Format::Md),
    ("junit.xml", Format::Junit),
];

/// Bytes written by the writability probe: room for a typical set of reports (the
/// quickstart's four files take about 50 KiB), so a nearly full disk is found before
/// the drill too.
const PROBE_BYTES: usize = 64 * 1024;

fn io(path: &Path, source: std::io::Error) -> ReportError {
    ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A run's report directory, created before the drill.
#[derive(Debug)]
pub struct RunDir {
    /// `<base>/<scenario>-<YYYYMMDDTHHMMSS>Z[-n]`.
    pub path: PathBuf,
    /// The outermost directory that creating it made (the run directory itself, or
    /// `base` or one of its parents when they did not exist).
    created: PathBuf,
}

impl RunDir {
    /// Removes the directory and the parents made for it, if they are still empty:
    /// a run refused before it started leaves nothing behind.
    pub fn discard(self) {
        let mut dir = self.path.as_path();
        loop {
            if std::fs::remove_dir(dir).is_err() || dir == self.created {
                break;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }
}

/// Creates `<base>/<scenario>-<YYYYMMDDTHHMMSS>Z` (with `-2`, `-3`, … if it exists,
/// claimed atomically so that two runs never share one) and proves it writable.
pub fn create_run_dir(
    base: &Path,
    scenario: &str,
    started_at: &str,
) -> Result<RunDir, ReportError> {
    let missing_from = base
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(base).map_err(|e| io(base, e))?;
    let stamp: String = started_at
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let first = base.join(format!("{scenario}-{stamp}Z"));
    let mut candidate = first.clone();
    let mut n = 2;
    loop {
        match std::fs::create_dir(&candidate) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                candidate = PathBuf::from(format!("{}-{n}", first.display()));
                n += 1;
            }
            Err(e) => return Err(io(&candidate, e)),
        }
    }
    let dir = RunDir {
        created: missing_from.unwrap_or_else(|| candidate.clone()),
        path: candidate,
    };
    if let Err(e) = probe(&dir.path) {
        dir.discard();
        return Err(e);
    }
    Ok(dir)
}

/// Writes, fsyncs and removes a probe file in `dir`.
pub fn probe(dir: &Path) -> Result<(), ReportError> {
    let p = dir.join(format!(".firedrill-probe-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&[b'\n'; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&p);
    result.map_err(|e| io(dir, e))
}

/// Writes journal.json, report.html, report.md and junit.xml into `dir` (created if
/// missing), each atomically, then the manifest of the directory
/// ([`super::integrity::seal`]) last; stops at the first error.
pub fn write_reports(
    record: &RunRecord,
    dir: &Path,
    template_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut out = Vec::new();
    for (name, f) in REPORT_FILES {
        let p = dir.join(name);
        write_atomic(&p, render(record, f, template_dir)?.as_bytes())?;
        out.push(p);
    }
    out.push(super::integrity::seal(dir)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_claimed_once_each() {
        let base = tempfile::tempdir().unwrap();
        let at = "2025-03-14T02:10:00.123Z";
        let a = create_run_dir(base.path(), "s", at).unwrap().path;
        let b = create_run_dir(base.path(), "s", at).unwrap().path;
        assert_eq!(a, base.path().join("s-20250314T021000Z"));
        assert_eq!(b, base.path().join("s-20250314T021000Z-2"));
        // The probe left nothing behind.
        assert_eq!(std::fs::read_dir(&a).unwrap().count(), 0);
    }

    #[test]
    fn discard_removes_only_what_it_made() {
        let base = tempfile::tempdir().unwrap();
        let nested = base.path().join("a/b/reports");
        let d = create_run_dir(&nested, "s", "2025-03-14T02:10:00Z").unwrap();
        d.discard();
        assert!(!base.path().join("a").exists());
        let kept = base.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        create_run_dir(&kept, "s", "2025-03-14T02:10:00Z")
            .unwrap()
            .discard();
        assert!(kept.exists());
        assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_the_way_is_an_error_naming_it() {
        let base = tempfile::tempdir().unwrap();
        let file = base.path().join("reports");
        std::fs::write(&file, "not a directory").unwrap();
        let e = create_run_dir(&file, "s", "2025-03-14T02:10:00Z").unwrap_err();
        assert!(
            e.to_string().starts_with(&file.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A missing directory: an error, and nothing created.
        let gone = dir.path().join("gone/journal.json");
        assert!(write_atomic(&gone, b"x").is_err());
        assert!(!gone.exists());
    }
}
