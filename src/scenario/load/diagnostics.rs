//! Diagnostics: what a problem in a scenario file looks like and how it is worded.
//!
//! Every other part of the loader reports through [`Diags`], which places a
//! [`Diagnostic`] at `file:line:column` of the key or the value of a dotted path and
//! masks secret var values in its message. The wording lives here too, in one place,
//! so every message reads the same way (`found …, expected …`): serde's and
//! serde_yaml's errors reworded for a scenario author, multi-line messages made one
//! line, and the order problems are shown in.

use std::fmt;

use crate::scenario::span::{Pos, SpanIndex};

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field (`faults[0].with.signal`); empty for the whole document.
    pub path: String,
    /// What was found and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, path, self.message
        )
    }
}

/// Where diagnostics are placed: the file's name, its text and the index of where
/// each dotted path starts in it.
pub(super) struct Diags<'a> {
    pub(super) file: &'a str,
    pub(super) index: &'a SpanIndex,
    pub(super) text: &'a str,
    /// Secret var values, masked in every message once vars are resolved: a value
    /// echoed by a message (`found `…``) may have come from one.
    pub(super) secrets: Option<&'a crate::secrets::Redactor>,
}

impl Diags<'_> {
    /// At `pos`, or at the start of the file when there is none; secrets masked.
    pub(super) fn make(&self, path: &str, pos: Option<Pos>, message: String) -> Diagnostic {
        let pos = pos.unwrap_or(Pos { line: 1, column: 1 });
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: match self.secrets {
                Some(r) => r.redact(&message).into_owned(),
                None => message,
            },
        }
    }
    /// At the key of `path` (where "this field" starts).
    pub(super) fn at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate(path), message)
    }
    /// At the value of `path` (where "this value" starts).
    pub(super) fn value_at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate_value(path), message)
    }
    /// At the `{{name}}` inside the string value of `path` when it can be found on
    /// the value's line, else at the value.
    pub(super) fn placeholder_at(&self, path: &str, name: &str, message: String) -> Diagnostic {
        let mut pos = self.index.locate_value(path);
        if let Some(p) = &mut pos {
            let line = self.text.lines().nth(p.line - 1).unwrap_or_default();
            let from: String = line.chars().skip(p.column - 1).collect();
            let found = from.match_indices("{{").find(|(i, _)| {
                let rest = &from[i + 2..];
                rest.trim_start().starts_with(name)
                    && rest.trim_start()[name.len()..]
                        .trim_start()
                        .starts_with("}}")
            });
            if let Some((i, _)) = found {
                p.column += from[..i].chars().count();
            }
        }
        self.make(path, pos, message)
    }

    /// A YAML syntax error. The parser's position is where it gave up, which for a
    /// quote left open is many lines after the mistake, so an open quote before that
    /// position is reported instead; a duplicate key is reported at its second use.
    pub(super) fn yaml(&self, e: &serde_yaml::Error) -> Diagnostic {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let at = Pos { line, column };
        let full = e.to_string();
        if full.contains("more than one document") {
            // serde_yaml gives no position; the second document starts at a `---`
            // after some content.
            let mut content = false;
            for (n, l) in self.text.lines().enumerate() {
                if l.starts_with("---") && content {
                    return self.make(
                        "",
                        Some(Pos {
                            line: n + 1,
                            column: 1,
                        }),
                        "found a second YAML document (`---`), expected one scenario per file"
                            .into(),
                    );
                }
                let t = l.trim();
                content |= !t.is_empty() && !t.starts_with('#') && !t.starts_with("---");
            }
        }
        if full.contains("duplicate entry with key")
            && let Some(d) = self.index.duplicate_keys().first()
        {
            let key = d.path.rsplit('.').next().unwrap_or(&d.path);
            return self.make(
                    &d.path,
                    Some(d.again),
                    format!(
                        "found `{key}` a second time in the same map (first at line {} column {}), expected each key once",
                        d.first.line, d.first.column
                    ),
                );
        }
        if let Some(q) = self.index.unclosed_quotes().iter().rev().find(|q| **q < at) {
            let quote = self
                .text
                .lines()
                .nth(q.line - 1)
                .and_then(|l| l.chars().nth(q.column - 1))
                .unwrap_or('"');
            let mut path = self.index.path_before(*q).unwrap_or_default().to_string();
            // The parser may stop before it reports the key of the string; take it
            // from the text (`  pattern: "...`).
            let before: String = self
                .text
                .lines()
                .nth(q.line - 1)
                .unwrap_or_default()
                .chars()
                .take(q.column - 1)
                .collect();
            let last = before.rsplit(['{', ',', '[']).next().unwrap_or_default();
            if let Some(key) = last.trim().trim_start_matches("- ").strip_suffix(':') {
                let key = key.trim();
                if !key.is_empty() && !key.contains(' ') && !path.ends_with(key) {
                    path = join(&path, key);
                }
            }
            return self.make(
                &path,
                Some(*q),
                format!(
                    "found a string opened with {quote} that is not closed on its line (the YAML parser ran on to line {line}), expected a closing {quote} on line {}",
                    q.line
                ),
            );
        }
        // "PROBLEM at line L column C, CONTEXT at line L2 column C2"
        let problem = strip_location(&full);
        let context = full
            .split_once(", ")
            .map(|(_, c)| c.to_string())
            .filter(|c| c.starts_with("while "));
        let context_pos = context.as_deref().and_then(|c| {
            let rest = &c[c.find(" at line ")? + " at line ".len()..];
            let (l, rest) = rest.split_once(" column ")?;
            Some(Pos {
                line: l.trim().parse().ok()?,
                column: rest.trim().parse().ok()?,
            })
        });
        // The event parser stops a token or two before the error, so the last keys
        // are missing from the index; the text before the error line parses further.
        let before: Vec<&str> = self.text.lines().take(line.saturating_sub(1)).collect();
        let prefix = SpanIndex::build(&before.join("\n"));
        let path = context_pos
            .and_then(|p| prefix.path_at(p).or_else(|| self.index.path_at(p)))
            .or_else(|| prefix.path_before(at))
            .or_else(|| self.index.path_before(at))
            .unwrap_or_default()
            .to_string();
        let context = context
            .map(|c| format!(" {}", c.replace(" at line ", " that starts at line ")))
            .unwrap_or_default();
        let line_text = self
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default();
        let indent: &str = &line_text[..line_text.len() - line_text.trim_start().len()];
        let expected = if indent.contains('\t') {
            "spaces for indentation (YAML does not allow tabs)"
        } else if [
            "did not find expected key",
            "mapping values are not allowed",
            "block sequence entries are not allowed",
            "did not find expected '-'",
        ]
        .iter()
        .any(|p| problem.contains(p))
        {
            "the keys of one mapping at one indentation"
        } else if problem.contains("end of stream") || problem.contains("did not find expected") {
            "every quote and bracket closed"
        } else {
            "well-formed YAML"
        };
        self.make(
            &path,
            Some(at),
            format!("found invalid YAML ({problem}{context}), expected {expected}"),
        )
    }

    /// A serde error with its path, prefixed by `base`.
    pub(super) fn serde<E: fmt::Display>(
        &self,
        base: &str,
        e: &serde_path_to_error::Error<E>,
    ) -> Diagnostic {
        let inner = strip_location(&e.inner().to_string());
        let rel = e.path().to_string();
        let path = if rel == "." {
            base.to_string()
        } else {
            join(base, &rel)
        };
        if let Some((field, rest)) = backticked(&inner, "unknown field `") {
            // serde_path_to_error already ends the path with the unknown key; point
            // at the key itself, not at its value.
            let path = if path == field || path.ends_with(&format!(".{field}")) {
                path
            } else {
                join(&path, field)
            };
            let expected = match rest.find("expected ") {
                Some(i) => rest[i + "expected ".len()..].to_string(),
                None => "no fields here".into(),
            };
            return self.at(
                &path,
                format!("found unknown field `{field}`, expected {expected}"),
            );
        }
        if let Some((field, _)) = backticked(&inner, "missing field `") {
            // The field is not in the file: point at the map that lacks it.
            return self.make(
                &join(&path, field),
                self.index.locate(&path),
                format!("found no `{field}`, expected this required field"),
            );
        }
        if let Some((variant, rest)) = backticked(&inner, "unknown variant `") {
            let expected = rest
                .trim_start_matches(", ")
                .trim_start_matches("expected ");
            let message = format!("found `{variant}`, expected {expected}");
            // `probe: { htp: {...} }`: the kind is the key of a one-key map.
            let key_path = join(&path, variant);
            if self.index.locate(&key_path) != self.index.locate(&path) {
                return self.at(&key_path, message);
            }
            return self.value_at(&path, message);
        }
        self.value_at(&path, reword_serde(&inner))
    }
}

/// Every problem, in file order, each once.
pub(super) fn in_file_order(mut errors: Vec<Diagnostic>) -> Vec<Diagnostic> {
    errors.sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
    errors.dedup();
    errors
}

pub(super) fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rel.to_string(),
        (false, false) if rel.starts_with('[') => format!("{base}{rel}"),
        _ => format!("{base}.{rel}"),
    }
}

/// The names a message offers after "expected one of": comma-separated, or
/// `none declared`.
pub(super) fn declared_list<'n>(names: impl IntoIterator<Item = &'n String>) -> String {
    let list = names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if list.is_empty() {
        "none declared".into()
    } else {
        list
    }
}

/// serde_yaml appends " at line L column C" to some messages; we print positions ourselves.
pub(super) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Splits `prefix` + "`name`" + rest into (name, rest).
pub(super) fn backticked<'m>(msg: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
    let rest = msg.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Turns serde's words into a scenario author's: `found …, expected …`.
fn reword_serde(msg: &str) -> String {
    // Durations (crate::duration) say "`10` has no unit; expected e.g. ...".
    if let Some((value, rest)) = backticked(msg, "`") {
        if let Some(example) = rest.strip_prefix(" has no unit; expected e.g. ") {
            return format!(
                "found `{value}` without a unit, expected a duration such as {example}"
            );
        }
        if let Some(why) = rest.strip_prefix(" is not a duration (")
            && let Some((why, example)) = why.split_once("); expected e.g. ")
        {
            return format!("found `{value}`, expected a duration such as {example} ({why})");
        }
    }
    if msg == "an empty duration" {
        return "found an empty duration, expected a duration such as `500ms`, `5s`, `2m`".into();
    }
    if msg.ends_with("map, expected map with a single key") {
        // serde_json's words for an enum written as a map with 0 or 2+ keys.
        return "found a map without exactly one key, expected a map with a single key (the kind)"
            .into();
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (found, expected) = rest
                .split_once(", expected ")
                .unwrap_or((rest, "another value"));
            return format!(
                "found {}, expected {}",
                found_words(found),
                expected_words(expected)
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ")
        && let Some((n, expected)) = rest.split_once(", expected ")
    {
        return format!("found {n} items, expected {expected}");
    }
    if let Some(name) = msg.strip_prefix("data did not match any variant of untagged enum ") {
        return format!(
            "found a value of the wrong shape, expected {}",
            untagged_words(name)
        );
    }
    msg.to_string()
}

/// serde's `Unexpected` (`string "x"`, `integer `5``, `map`) in plain words.
fn found_words(found: &str) -> String {
    match found {
        "map" => "a map".into(),
        "sequence" => "a list".into(),
        "unit value" | "null" => "an empty value".into(),
        f => {
            for (serde, ours) in [
                ("string ", "the string "),
                ("integer ", "the number "),
                ("floating point ", "the number "),
                ("boolean ", "the boolean "),
            ] {
                if let Some(v) = f.strip_prefix(serde) {
                    return format!("{ours}{v}");
                }
            }
            f.to_string()
        }
    }
}

/// serde's `expected` (`u32`, `a sequence`, `struct Metadata`) in plain words.
fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a borrowed string" => "a string".into(),
        e => match e.strip_prefix("struct ") {
            Some(name) => format!("a map ({name})"),
            None => match e.strip_prefix("enum ") {
                Some(name) => format!("one of the {name} forms"),
                None => e.to_string(),
            },
        },
    }
}

fn untagged_words(name: &str) -> String {
    match name {
        n if n.starts_with("OneOrMany") => {
            "a map or a list of maps (see `firedrill schema`)".into()
        }
        n => format!("one of the {n} forms (see `firedrill schema`)"),
    }
}

/// Validation messages from fault and probe kinds, made one line: the `regex`
/// crate explains a bad pattern over four lines with a caret under the culprit.
pub(super) fn tidy(msg: &str) -> String {
    if !msg.contains('\n') {
        return msg.to_string();
    }
    if let Some(i) = msg.find("regex parse error:") {
        let lines: Vec<&str> = msg[i..].lines().collect();
        let pattern = lines.get(1).map(|l| l.trim()).unwrap_or_default();
        let caret = lines
            .get(2)
            .and_then(|l| {
                let pat_indent = lines[1].len() - lines[1].trim_start().len();
                l.find('^').map(|c| c.saturating_sub(pat_indent) + 1)
            })
            .unwrap_or(0);
        let why = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("cannot be parsed");
        return format!(
            "found `{pattern}`, expected a regular expression ({why} at character {caret})"
        );
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_reworded() {
        assert_eq!(
            reword_serde("`10` has no unit; expected e.g. `500ms`, `5s`, `2m`"),
            "found `10` without a unit, expected a duration such as `500ms`, `5s`, `2m`"
        );
        assert_eq!(
            reword_serde("invalid type: sequence, expected struct Metadata"),
            "found a list, expected a map (Metadata)"
        );
    }
}
