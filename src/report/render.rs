//! Renderers: HTML, Markdown, JUnit XML and the JSON journal.
//!
//! Each format is a handlebars template embedded from `src/report/templates/` and
//! overridable by a file of the same name in `--template-dir`. Templates see a view
//! model ([`view::View`]) computed in Rust from the [`RunRecord`], plus a few helpers
//! (`dur`, `secs`, `pct`, `cls`, `tx`/`tw` for the SVG timeline, `cell` in Markdown).
//! Escaping is per format: HTML/XML-safe for HTML and JUnit (control characters that
//! XML forbids are replaced); for Markdown, data is shown literally and never leaves
//! its line (see [`escape_md`]); templates never use `{{{ }}}` on run data.

mod chart;
mod exercise;
mod junit;
pub use junit::set_non_critical_as_failure;
mod view;

use std::path::Path;

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
        .map_err(|e| syntax_error(&shown, &e))?;
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

/// Parses every template a run will render (overrides from `template_dir` included),
/// so that a missing directory or a broken template is found before a drill, not after.
pub fn check_templates(template_dir: Option<&Path>) -> Result<(), ReportError> {
    for format in [Format::Html, Format::Md, Format::Junit] {
        let name = format.template_name().expect("templated format");
        let (source, shown) = template_source(format, name, template_dir)?;
        handlebars::Template::compile(&source).map_err(|e| syntax_error(&shown, &e))?;
    }
    Ok(())
}

fn syntax_error(shown: &str, e: &handlebars::TemplateError) -> ReportError {
    ReportError::Template {
        name: shown.to_string(),
        message: match e.pos() {
            Some((line, col)) => format!("line {line}, column {col}: {}", e.reason()),
            None => e.reason().to_string(),
        },
    }
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

/// Markdown: run data is shown literally, and stays on the line and in the block the
/// template put it in. HTML and code-span delimiters become character references (a
/// reference inside a code span would show as typed, so data never opens one);
/// emphasis, link, strike-through and table punctuation and the backslash are
/// backslash-escaped, `_` only where it could start emphasis (not inside a word, so
/// `step_started` stays readable). Line breaks become `<br>` (the only break that
/// neither ends a table row nor starts a new block: a step name with
/// `"\n\n# ALL GOOD"` must not become a heading in a CI summary), and what would open
/// a block at the start of a line (`#`, `-`, `+`, `=`, `1.`, indentation) is escaped.
pub(crate) fn escape_md(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let chars: Vec<char> = s.trim_end_matches('\n').chars().collect();
    let mut out = String::with_capacity(s.len());
    // Leading whitespace would indent the line into a code block: its first character
    // becomes a reference, so the line starts with text.
    let mut start = 0;
    match chars.first() {
        Some(' ') => {
            out.push_str("&#32;");
            start = 1;
        }
        Some('\t') => {
            out.push_str("&#9;");
            start = 1;
        }
        _ => {}
    }
    // Block markers at the start: ATX heading, setext underline, list item or
    // thematic break (`-`/`+` only before a blank or another `-`, so `-1` and `+5 ms`
    // stay as typed), ordered list item (digits then `.` or `)` then a blank: `1.2 s`
    // stays as typed).
    let blank_at = |j: usize| chars.get(j).is_none_or(|c| c.is_whitespace());
    match chars.get(start) {
        Some('#' | '=') => out.push('\\'),
        Some('-') if blank_at(start + 1) || chars.get(start + 1) == Some(&'-') => out.push('\\'),
        Some('+') if blank_at(start + 1) => out.push('\\'),
        _ => {}
    }
    let digits = chars[start..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let ordered = digits > 0
        && matches!(chars.get(start + digits), Some('.' | ')'))
        && blank_at(start + digits + 1);
    for (i, &c) in chars.iter().enumerate().skip(start) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push_str("&#96;"),
            '\\' | '*' | '[' | ']' | '~' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if ordered && i == start + digits => {
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
            '\n' => out.push_str("<br>"),
            '\t' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A Markdown table cell (the `cell` helper). [`escape_md`] already keeps data on one
/// line and escapes `|`, so a cell is escaped text; the helper stays for templates
/// that use it.
pub(crate) fn md_cell(s: &str) -> String {
    escape_md(s)
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
        "failed" | "error" | "injection_failed" | "recovery_incomplete" | "interrupted"
        | "high" => "bad",
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
    #[test_case("a\n\n# b\r\nc\n", "a<br><br># b<br>c" ; "line breaks never end the line")]
    #[test_case("# ALL GOOD", "\\# ALL GOOD" ; "heading at the start")]
    #[test_case("- item", "\\- item" ; "bullet at the start")]
    #[test_case("---", "\\---" ; "thematic break")]
    #[test_case("+ x", "\\+ x" ; "plus bullet")]
    #[test_case("=", "\\=" ; "setext underline")]
    #[test_case("12. x", "12\\. x" ; "ordered item")]
    #[test_case("3) x", "3\\) x" ; "ordered item with parenthesis")]
    #[test_case("    code", "&#32;   code" ; "indentation")]
    #[test_case("-1 ms, +5 ms, 1.2 s, a # b", "-1 ms, +5 ms, 1.2 s, a # b" ; "not block markers")]
    #[test_case("> q", "&gt; q" ; "quote")]
    fn markdown(raw: &str, escaped: &str) {
        assert_eq!(escape_md(raw), escaped);
    }

    #[test_case("a|b", "a\\|b" ; "pipe")]
    #[test_case("one\r\ntwo\n", "one<br>two" ; "line breaks")]
    #[test_case("one\rtwo", "one<br>two" ; "carriage return alone")]
    #[test_case("x\\|y", "x\\\\\\|y" ; "escaped pipe in data")]
    fn cells(raw: &str, escaped: &str) {
        assert_eq!(md_cell(raw), escaped);
    }
}
