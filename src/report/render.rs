//! Renderers: HTML, Markdown, JUnit XML and the JSON journal.
//!
//! Each format is a handlebars template embedded from `src/report/templates/` and
//! overridable by a file of the same name in `--template-dir`. Templates see a view
//! model ([`view::View`]) computed in Rust from the [`RunRecord`], plus a few helpers
//! (`dur`, `secs`, `pct`, `cls`, `tx`/`tw` for the SVG timeline, `cell` in Markdown).
//! Escaping is per format: HTML/XML-safe for HTML and JUnit (control characters that
//! XML forbids are replaced), `& < >` for Markdown; templates never use `{{{ }}}` on
//! run data.

mod chart;
mod junit;
mod view;

use std::path::{Path, PathBuf};

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
    handlebars_helper,
};
use serde_json::Value;

use crate::model::RunRecord;
use crate::report::words::human_ms;

/// Output formats of `firedrill report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Md,
    Junit,
    Json,
}

impl Format {
    /// Template file name (built-in and in `--template-dir`); None for JSON.
    pub fn template_name(self) -> Option<&'static str> {
        match self {
            Format::Html => Some("report.html.hbs"),
            Format::Md => Some("report.md.hbs"),
            Format::Junit => Some("junit.xml.hbs"),
            Format::Json => None,
        }
    }
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

const HTML_TEMPLATE: &str = include_str!("templates/report.html.hbs");
const MD_TEMPLATE: &str = include_str!("templates/report.md.hbs");
const JUNIT_TEMPLATE: &str = include_str!("templates/junit.xml.hbs");

/// Renders one format.
pub fn render(
    record: &RunRecord,
    format: Format,
    template_dir: Option<&Path>,
) -> Result<String, ReportError> {
    let Some(name) = format.template_name() else {
        let mut s = serde_json::to_string_pretty(record).expect("run record serialises");
        s.push('\n');
        return Ok(s);
    };
    let (source, shown) = template_source(format, name, template_dir)?;
    let view = view::View::new(record);
    let scale = chart::Scale::of(&view.chart);
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(match format {
        Format::Md => escape_md,
        _ => escape_markup,
    });
    register_helpers(&mut hb, scale, format);
    hb.register_template_string(name, &source)
        .map_err(|e| ReportError::Template {
            name: shown.clone(),
            message: match e.pos() {
                Some((line, col)) => format!("line {line}, column {col}: {}", e.reason()),
                None => e.reason().to_string(),
            },
        })?;
    hb.render(name, &view).map_err(|e| {
        let reason = match e.reason() {
            RenderErrorReason::MissingVariable(Some(path)) => {
                format!("no field `{path}` in the report view (see docs/reports.md)")
            }
            other => other.to_string(),
        };
        ReportError::Template {
            name: shown,
            message: match (e.line_no, e.column_no) {
                (Some(line), Some(col)) => format!("line {line}, column {col}: {reason}"),
                _ => reason,
            },
        }
    })
}

/// The template text and how to name it in errors: the override file if
/// `template_dir` has one, else the built-in.
fn template_source(
    format: Format,
    name: &str,
    template_dir: Option<&Path>,
) -> Result<(String, String), ReportError> {
    if let Some(dir) = template_dir {
        if !dir.is_dir() {
            return Err(ReportError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "template directory not found",
                ),
            });
        }
        let p = dir.join(name);
        if p.exists() {
            let text = std::fs::read_to_string(&p).map_err(|source| ReportError::Io {
                path: p.display().to_string(),
                source,
            })?;
            return Ok((text, p.display().to_string()));
        }
    }
    let builtin = match format {
        Format::Html => HTML_TEMPLATE,
        Format::Md => MD_TEMPLATE,
        Format::Junit => JUNIT_TEMPLATE,
        Format::Json => unreachable!("json has no template"),
    };
    Ok((builtin.to_string(), format!("built-in {name}")))
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

// ── formatting shared with the improvement rules ─────────────────────────────

/// Escapes for HTML and XML alike (handlebars' default set), and replaces the control
/// characters XML 1.0 forbids even as references (e.g. ANSI escapes in command output).
pub(crate) fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Markdown: run data is shown literally. HTML and code-span delimiters become
/// character references (a reference inside a code span would show as typed, so
/// data never opens one); emphasis, link and strike-through punctuation and the
/// backslash are backslash-escaped, `_` only where it could start emphasis (not
/// inside a word, so `step_started` stays readable).
pub(crate) fn escape_md(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push_str("&#96;"),
            '\\' | '*' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '_' => {
                let word = |j: Option<&char>| j.is_some_and(|c| c.is_alphanumeric());
                if !(i > 0 && word(chars.get(i - 1)) && word(chars.get(i + 1))) {
                    out.push('\\');
                }
                out.push('_');
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A Markdown table cell: [`escape_md`], plus `|` escaped and line breaks as `<br>`
/// (the only way to break a line inside a GFM table cell).
pub(crate) fn md_cell(s: &str) -> String {
    let s = escape_md(&s.replace("\r\n", "\n")).replace('|', "\\|");
    s.trim_end_matches('\n').replace('\n', "<br>")
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

handlebars_helper!(dur: |ms: Value| num(&ms).map_or("—".to_string(), human_ms));
handlebars_helper!(secs: |ms: Value| format!("{:.3}", num(&ms).unwrap_or(0.0) / 1000.0));
handlebars_helper!(pct: |part: Value, whole: Value| match (num(&part), num(&whole)) {
    (Some(p), Some(w)) if w > 0.0 => format!("{:.0}%", 100.0 * p / w),
    _ => "—".to_string(),
});
// CSS class of a status or severity word; a failed non-critical step is a warning.
handlebars_helper!(cls: |status: Value, *rest| {
    let critical = rest.get(1).and_then(|v| v.as_bool()).unwrap_or(true);
    match status.as_str().unwrap_or("") {
        "passed" | "met" => "ok",
        "failed" | "error" if !critical => "warn",
        "failed" | "error" | "injection_failed" | "recovery_incomplete" | "high" => "bad",
        "medium" => "warn",
        "low" => "info",
        _ => "skip",
    }
});

fn register_helpers(hb: &mut Handlebars<'_>, scale: chart::Scale, format: Format) {
    hb.register_helper("dur", Box::new(dur));
    hb.register_helper("secs", Box::new(secs));
    hb.register_helper("pct", Box::new(pct));
    hb.register_helper("cls", Box::new(cls));
    // Coordinates are plain numbers: written as is.
    hb.register_helper(
        "tx",
        Box::new(
            move |h: &Helper,
                  _: &Handlebars,
                  _: &Context,
                  _: &mut RenderContext,
                  out: &mut dyn Output|
                  -> HelperResult {
                let ms = param_f64(h, 0, "tx")?;
                out.write(&format!("{:.1}", scale.x(ms)))?;
                Ok(())
            },
        ),
    );
    hb.register_helper(
        "tw",
        Box::new(
            move |h: &Helper,
                  _: &Handlebars,
                  _: &Context,
                  _: &mut RenderContext,
                  out: &mut dyn Output|
                  -> HelperResult {
                let (from, to) = (param_f64(h, 0, "tw")?, param_f64(h, 1, "tw")?);
                out.write(&format!("{:.1}", scale.w(from, to)))?;
                Ok(())
            },
        ),
    );
    if format == Format::Md {
        // Does its own escaping (md_cell), hence written as is.
        hb.register_helper(
            "cell",
            Box::new(
                |h: &Helper,
                 _: &Handlebars,
                 _: &Context,
                 _: &mut RenderContext,
                 out: &mut dyn Output|
                 -> HelperResult {
                    let v = h
                        .param(0)
                        .ok_or(RenderErrorReason::ParamNotFoundForIndex("cell", 0))?
                        .value();
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    out.write(&md_cell(&text))?;
                    Ok(())
                },
            ),
        );
    }
}

fn param_f64(h: &Helper, i: usize, name: &'static str) -> Result<f64, RenderErrorReason> {
    let p = h
        .param(i)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, i))?;
    p.value().as_f64().ok_or_else(|| {
        RenderErrorReason::ParamTypeMismatchForName(name, i.to_string(), "number".into())
    })
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case("a<b>&\"c\" 'd' `e` f=g", "a&lt;b&gt;&amp;&quot;c&quot; &#x27;d&#x27; &#x60;e&#x60; f&#x3D;g" ; "markup specials")]
    #[test_case("red \u{1b}[31m\0x\tok\n", "red \u{fffd}[31m\u{fffd}x\tok\n" ; "control characters")]
    fn markup(raw: &str, escaped: &str) {
        assert_eq!(escape_markup(raw), escaped);
    }

    #[test_case("<b>x</b> & y", "&lt;b&gt;x&lt;/b&gt; &amp; y" ; "html")]
    #[test_case("`kill -0 1` > /dev/null", "&#96;kill -0 1&#96; &gt; /dev/null" ; "code spans never open")]
    #[test_case("*/5 [a](b) ~x~ C:\\d", "\\*/5 \\[a\\](b) \\~x\\~ C:\\\\d" ; "inline punctuation")]
    #[test_case("step_started _em_ $.a_b", "step_started \\_em\\_ $.a_b" ; "underscore only at word edges")]
    fn markdown(raw: &str, escaped: &str) {
        assert_eq!(escape_md(raw), escaped);
    }

    #[test_case("a|b", "a\\|b" ; "pipe")]
    #[test_case("one\r\ntwo\n", "one<br>two" ; "line breaks")]
    #[test_case("x\\|y", "x\\\\\\|y" ; "escaped pipe in data")]
    fn cells(raw: &str, escaped: &str) {
        assert_eq!(md_cell(raw), escaped);
    }
}
