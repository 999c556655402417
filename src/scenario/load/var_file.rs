//! `--var-file FILE`: values for declared vars, kept in a file per environment or CI
//! job instead of a long command line.
//!
//! Two formats, chosen by the file name: `.yaml`, `.yml` or `.json` is a YAML map of
//! var name to scalar (`region: eu-1`, `replicas: 3`); anything else is `.env` lines
//! (`NAME=value`, an optional `export ` before the name, `#` comment lines, values in
//! single quotes taken literally, in double quotes with `\n`, `\"` and `\\`
//! escapes). A value is never echoed in a message: it may be a secret.
//!
//! The file is read with the same bounds as a scenario (a regular file of at most
//! 1 MiB), every problem is reported with its `file:line:column`, and each value then
//! goes through exactly the path of a `--var` ([`Override`]): it must name a declared
//! var, and a var declared `secret: true` stays secret whatever gave its value.

use std::collections::BTreeMap;
use std::path::Path;

use super::diagnostics::Diagnostic;
use super::{LoadError, limits};
use crate::scenario::span::SpanIndex;
use crate::scenario::vars;

/// A value given for a declared var from outside the scenario, and where it came from
/// (for the message when no var of that name is declared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub value: String,
    pub origin: Origin,
}

/// Where an [`Override`] was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--var NAME=VALUE`.
    CommandLine,
    /// A line of a `--var-file`.
    File {
        file: String,
        line: usize,
        column: usize,
    },
}

impl Override {
    /// A `--var NAME=VALUE` from the command line.
    pub fn command_line(name: impl Into<String>, value: impl Into<String>) -> Override {
        Override {
            name: name.into(),
            value: value.into(),
            origin: Origin::CommandLine,
        }
    }
}

/// Reads every `--var-file` in order, then appends the `--var` pairs: a later value
/// for the same name wins, so the command line overrides a file.
///
/// Returns the values that read well and the problems of every file: the caller
/// loads the scenario with the good values all the same, so a wrong name on one line
/// is reported in the same run as a broken line elsewhere. A file that cannot be read
/// at all is an error of its own.
pub fn overrides(
    files: &[impl AsRef<Path>],
    vars: &[(String, String)],
) -> Result<(Vec<Override>, Vec<Diagnostic>), LoadError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let (mut o, mut p) = read(f.as_ref())?;
        out.append(&mut o);
        problems.append(&mut p);
    }
    out.extend(vars.iter().map(|(k, v)| Override::command_line(k, v)));
    Ok((out, problems))
}

/// Reads one var file (format by its name, see the module doc): the values that read
/// well and the problems, by position.
pub fn read(path: &Path) -> Result<(Vec<Override>, Vec<Diagnostic>), LoadError> {
    let file = path.display().to_string();
    let text = limits::read(path).map_err(|e| match e {
        limits::ReadError::Refused(reason) => LoadError::Refused {
            file: file.clone(),
            reason,
        },
        limits::ReadError::Io(source) => LoadError::Io {
            file: file.clone(),
            source,
        },
    })?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    );
    let (values, mut problems) = if yaml {
        parse_yaml(&text, &file)
    } else {
        parse_env(&text, &file)
    };
    // The same name twice is almost always a copy-paste slip between environments;
    // silently taking the last would hide which one is used.
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &values {
        if let Origin::File { line, .. } = &o.origin {
            if let Some(prev) = first.insert(&o.name, *line) {
                problems.push(at(
                    &o.origin,
                    &o.name,
                    format!(
                        "found `{}` a second time (first on line {prev}), expected each var once",
                        o.name
                    ),
                ));
            }
        }
    }
    problems.sort_by_key(|d| (d.line, d.column));
    Ok((values, problems))
}

fn at(origin: &Origin, path: &str, message: String) -> Diagnostic {
    let (file, line, column) = match origin {
        Origin::File { file, line, column } => (file.clone(), *line, *column),
        Origin::CommandLine => ("(command line)".to_string(), 1, 1),
    };
    Diagnostic {
        file,
        line,
        column,
        path: path.to_string(),
        message,
    }
}

fn name_problem(name: &str) -> Option<String> {
    (!vars::is_var_name(name)).then(|| {
        format!("found var name `{name}`, expected letters, digits, `_` or `-`, starting with a letter or `_`")
    })
}

/// `.env` lines.
fn parse_env(text: &str, file: &str) -> (Vec<Override>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let indent = raw.len() - raw.trim_start().len();
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let (body, indent) = match body.strip_prefix("export ") {
            Some(rest) => (
                rest.trim_start(),
                indent + (body.len() - rest.trim_start().len()),
            ),
            None => (body, indent),
        };
        let origin = |column: usize| Origin::File {
            file: file.to_string(),
            line,
            column,
        };
        let Some((name, value)) = body.split_once('=') else {
            problems.push(at(
                &origin(indent + 1),
                "",
                "found a line without `=`, expected NAME=value (or a `#` comment)".to_string(),
            ));
            continue;
        };
        let name = name.trim_end();
        if let Some(p) = name_problem(name) {
            problems.push(at(&origin(indent + 1), name, p));
            continue;
        }
        let value_col =
            indent + body.len() - body[name.len()..].trim_start_matches([' ', '=']).len() + 1;
        match unquote(value.trim()) {
            Ok(v) => out.push(Override {
                name: name.to_string(),
                value: v,
                origin: origin(indent + 1),
            }),
            Err(what) => problems.push(at(&origin(value_col), name, what)),
        }
    }
    (out, problems)
}

/// A `.env` value: bare (as written, trimmed), `'literal'` or `"with \n escapes"`.
fn unquote(v: &str) -> Result<String, String> {
    let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(v.to_string());
    };
    let inner = &v[1..];
    let Some(end) = inner.rfind(q) else {
        return Err(format!(
            "found an unterminated {q}-quoted value, expected a closing {q} on the same line"
        ));
    };
    if !inner[end + 1..].trim().is_empty() {
        return Err(format!(
            "found text after the closing {q}, expected the value to end there"
        ));
    }
    let inner = &inner[..end];
    if q == '\'' {
        return Ok(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(c @ ('"' | '\\' | '$')) => out.push(c),
            Some(other) => {
                return Err(format!(
                    "found the escape `\\{other}`, expected one of \\n \\t \\\" \\\\ \\$"
                ));
            }
            None => return Err("found a `\\` at the end, expected an escape".to_string()),
        }
    }
    Ok(out)
}

/// A YAML (or JSON) map of var name to scalar.
fn parse_yaml(text: &str, file: &str) -> (Vec<Override>, Vec<Diagnostic>) {
    let index = SpanIndex::build(text);
    let origin = |path: &str, value: bool| {
        let pos = if value {
            index.locate_value(path)
        } else {
            index.locate(path)
        }
        .unwrap_or(crate::scenario::span::Pos { line: 1, column: 1 });
        Origin::File {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
        }
    };
    let doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            return (
                Vec::new(),
                vec![Diagnostic {
                    file: file.to_string(),
                    line,
                    column,
                    path: String::new(),
                    message: format!(
                        "found invalid YAML ({msg}), expected a map of var name to value"
                    ),
                }],
            );
        }
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let map = match doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return (out, problems),
        other => {
            problems.push(at(
                &origin("", false),
                "",
                format!(
                    "found {}, expected a map of var name to value",
                    vars::kind_of(&other)
                ),
            ));
            return (out, problems);
        }
    };
    for (k, v) in map {
        let Some(name) = k.as_str() else {
            problems.push(at(
                &origin("", false),
                "",
                format!("found the key {}, expected a var name", vars::kind_of(&k)),
            ));
            continue;
        };
        if let Some(p) = name_problem(name) {
            problems.push(at(&origin(name, false), name, p));
            continue;
        }
        let value = match &v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => {
                problems.push(at(
                    &origin(name, true),
                    name,
                    format!(
                        "found {}, expected a string, number or boolean",
                        vars::kind_of(other)
                    ),
                ));
                continue;
            }
        };
        out.push(Override {
            name: name.to_string(),
            value,
            origin: origin(name, false),
        });
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> (Vec<(String, String, usize, usize)>, Vec<String>) {
        let (o, p) = parse_env(text, "ci.env");
        (
            o.into_iter()
                .map(|o| match o.origin {
                    Origin::File { line, column, .. } => (o.name, o.value, line, column),
                    Origin::CommandLine => unreachable!(),
                })
                .collect(),
            p.into_iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn env_lines_with_comments_export_and_quotes() {
        let (o, p) = env(
            "# per environment\n\nregion=eu-1\nexport TOKEN = 'a b $c'\n  msg=\"x\\ny\"\nbare = with spaces  \n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            o,
            vec![
                ("region".into(), "eu-1".into(), 3, 1),
                ("TOKEN".into(), "a b $c".into(), 4, 8),
                ("msg".into(), "x\ny".into(), 5, 3),
                ("bare".into(), "with spaces".into(), 6, 1),
            ]
        );
    }

    #[test]
    fn every_env_problem_is_reported_with_its_position_and_no_value() {
        let (_, p) = env("ok=1\nnot a line\n9bad=x\nq=\"open secretvalue\nq2='a' tail\n");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].starts_with("ci.env:2:1: (document): found a line without `=`"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("ci.env:3:1: 9bad: found var name `9bad`"),
            "{}",
            p[1]
        );
        assert!(
            p[2].starts_with("ci.env:4:3: q: found an unterminated \"-quoted value"),
            "{}",
            p[2]
        );
        assert!(
            p[3].starts_with("ci.env:5:4: q2: found text after the closing '"),
            "{}",
            p[3]
        );
        assert!(p.iter().all(|m| !m.contains("secretvalue")));
    }

    #[test]
    fn yaml_map_of_scalars_with_positions() {
        let (o, p) = parse_yaml(
            "region: eu-1\nreplicas: 3\nfast: true\nbad: [1]\n",
            "ci.yaml",
        );
        assert_eq!(
            o.iter()
                .map(|o| (o.name.as_str(), o.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("region", "eu-1"), ("replicas", "3"), ("fast", "true")]
        );
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].to_string(),
            "ci.yaml:4:6: bad: found a list, expected a string, number or boolean"
        );
    }

    #[test]
    fn a_yaml_file_that_is_not_a_map_is_refused() {
        let (_, p) = parse_yaml("- a\n- b\n", "ci.yaml");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("expected a map of var name to value"),
            "{:?}",
            p[0]
        );
    }
}
