//! Loading a scenario: read, parse, substitute `{{vars}}`, deserialize, validate.
//!
//! Every problem is reported as a [`Diagnostic`] with `file:line:column`, the dotted
//! field path, what was found and what was expected. Validation collects all the
//! problems it can find in one pass, so an author fixes a file in one go.

mod decode;
mod limits;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::span::SpanIndex;
use super::vars::{self, Resolved, VarValue};
use super::{API_VERSION, FaultStep, Scenario};
use crate::fault::FaultSpec;
use crate::target::Target;
use decode::Parsed;

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

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read scenario: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// Not a regular file of a sane size: refused before it is read.
    #[error("{file}: cannot read scenario: {reason}")]
    Refused {
        file: String,
        reason: limits::Refusal,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(d) => d,
            LoadError::Io { .. } | LoadError::Refused { .. } => &[],
        }
    }
}

/// A fault step with its parameters decoded into the closed enum of kinds.
#[derive(Clone, Debug)]
pub struct ResolvedFault {
    /// Position in `faults:`.
    pub index: usize,
    pub step: FaultStep,
    pub spec: FaultSpec,
    pub target: Target,
}

/// A loaded, substituted and validated scenario: everything the engine needs.
#[derive(Clone, Debug)]
pub struct Drill {
    pub file: PathBuf,
    /// SHA-256 of the file bytes, hex.
    pub sha256: String,
    pub scenario: Scenario,
    pub faults: Vec<ResolvedFault>,
    /// Resolved targets by name, `local` included.
    pub targets: BTreeMap<String, Target>,
    pub vars: Resolved,
}

/// Reads and loads a scenario file. `overrides` are `--var name=value` pairs.
///
/// Only a regular file of at most 1 MiB is read (see [`limits`]): a FIFO, a device
/// or a directory is refused by name before anything blocks or grows.
pub fn load_file(path: &Path, overrides: &[(String, String)]) -> Result<Drill, LoadError> {
    let file = path.display().to_string();
    let text = limits::read(path).map_err(|e| match e {
        limits::ReadError::Refused(reason) => LoadError::Refused { file, reason },
        limits::ReadError::Io(source) => LoadError::Io { file, source },
    })?;
    load_str(&text, path, overrides)
}

/// Loads a scenario from text; `path` is used for messages and the journal.
///
/// Every problem is reported in one go, sorted by position: each section and each
/// step is decoded on its own (see [`decode`]) and the semantic checks run on what
/// decoded. Only a YAML syntax error, or input beyond the [`limits`], stops early.
pub fn load_str(
    text: &str,
    path: &Path,
    overrides: &[(String, String)],
) -> Result<Drill, LoadError> {
    let file = path.display().to_string();
    if text.len() > limits::MAX_BYTES {
        return Err(LoadError::Refused {
            file,
            reason: limits::Refusal::TooLarge(text.len() as u64),
        });
    }
    // Before any YAML parser: both are slow on deep nesting.
    if let Some(deep) = limits::too_deep(text) {
        return Err(LoadError::Invalid(vec![Diagnostic {
            file,
            line: deep.pos.line,
            column: deep.pos.column,
            path: deep.section,
            message: format!(
                "found collections nested {} levels deep, expected at most {}",
                deep.depth,
                limits::MAX_DEPTH
            ),
        }]));
    }
    let index = SpanIndex::build(text);
    // Before serde_yaml and substitution, which would each copy the key into the
    // path of every node under it.
    if let Some(long) = index.long_key() {
        return Err(LoadError::Invalid(vec![Diagnostic {
            file,
            line: long.pos.line,
            column: long.pos.column,
            path: long.parent.clone(),
            message: format!(
                "found a key of {} characters, expected at most {}",
                long.chars,
                super::span::MAX_KEY_CHARS
            ),
        }]));
    }
    let diag = Diags {
        file: &file,
        index: &index,
        text,
        secrets: None,
    };

    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| LoadError::Invalid(vec![diag.yaml(&e)]))?;
    if !matches!(doc, Value::Mapping(_)) {
        return Err(LoadError::Invalid(vec![diag.at(
            "",
            format!(
                "found {}, expected a scenario (a map with apiVersion, kind, metadata, faults)",
                vars::kind_of(&doc)
            ),
        )]));
    }

    // 1. Variables, before anything else: every other field may use them. Each var
    // on its own, so one bad definition does not hide the others.
    let mut errors = Vec::new();
    let (declared, var_names) = decode_vars(doc.get("vars"), &diag, &mut errors);
    let resolved = resolve_vars(&declared, &var_names, overrides, &diag, &mut errors);
    // From here on every message is masked with the secret values; the few made
    // while resolving them are masked now.
    let redactor = crate::secrets::Redactor::new(resolved.secret_values());
    for e in &mut errors {
        e.message = redactor.redact(&e.message).into_owned();
    }
    let diag = Diags {
        secrets: Some(&redactor),
        ..diag
    };
    if let Some(d) = expansion_beyond_limit(text, &resolved, &diag) {
        // Substituting would build the oversized text: stop here.
        errors.push(d);
        return Err(invalid(errors));
    }

    // 2. Substitute everywhere except in `vars:` itself.
    let mut unresolved = Vec::new();
    if let Value::Mapping(m) = &mut doc {
        for (k, v) in m.iter_mut() {
            let key = k.as_str().unwrap_or_default().to_string();
            if key != "vars" {
                vars::substitute(v, &resolved, &key, &mut unresolved);
            }
        }
    }
    // A field still holding a `{{placeholder}}` is not what the author meant: its
    // other problems (not a duration, not a URL) would be noise.
    let tainted: HashSet<String> = unresolved.iter().map(|u| u.path.clone()).collect();
    // The same name twice in one string is one mistake to fix.
    unresolved.dedup_by(|a, b| a.path == b.path && a.name == b.name);
    let known = resolved
        .values
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    for u in &unresolved {
        // A declared var without a value (bad definition, unset environment
        // variable) is reported at its definition.
        if var_names.contains(&u.name) {
            continue;
        }
        errors.push(diag.placeholder_at(
            &u.path,
            &u.name,
            format!(
                "found `{{{{{}}}}}`, expected one of the declared vars ({})",
                u.name,
                if known.is_empty() {
                    "none declared"
                } else {
                    &known
                }
            ),
        ));
    }

    // 3. Typed deserialization; unknown keys are errors. It goes through JSON because
    // serde_yaml 0.9 decodes enums only from YAML tags (`!http`), not from the
    // one-key maps scenarios are written in (`probe: { http: ... }`).
    let json_doc = to_json(&doc);
    let mut checks = Vec::new();
    let parsed = decode::scenario(&json_doc, &diag, &mut checks);

    // 4. Fault parameters, into the closed enum of kinds.
    let mut faults = Vec::new();
    let targets = resolve_targets(&parsed, &diag, &mut checks);
    for (i, step) in parsed.faults.iter().enumerate() {
        let Some(step) = step else { continue };
        let base = format!("faults[{i}]");
        let with = if step.with.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            step.with.clone()
        };
        let m = serde_json::json!({ "kind": step.kind, "with": to_json(&with) });
        let spec = decode::Decoder {
            diag: &diag,
            errors: &mut checks,
        }
        .one::<FaultSpec>(&m, &base);
        if !targets.names.contains(&step.target) {
            checks.push(undefined_target(
                &diag,
                &format!("{base}.target"),
                &step.target,
                &targets,
            ));
            continue;
        }
        // A target whose definition is broken was reported there.
        let (Some(spec), Some(target)) = (spec, targets.resolved.get(&step.target).cloned()) else {
            continue;
        };
        for (p, msg) in spec.validate(&target) {
            // The whole `with:` block (e.g. conflicting fields) is reported at
            // its key, a single parameter at its value.
            let path = join(&base, &p);
            checks.push(if p == "with" {
                diag.at(&path, tidy(&msg))
            } else {
                diag.value_at(&path, tidy(&msg))
            });
        }
        faults.push(ResolvedFault {
            index: i,
            step: step.clone(),
            spec,
            target,
        });
    }

    // 5. Cross-field validation, on whatever decoded.
    validate(&parsed, &targets, &diag, &mut checks);
    checks.retain(|d| !tainted.contains(&d.path));
    errors.extend(checks);
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let Some(scenario) = parsed.into_scenario(declared) else {
        // Every part that did not decode pushed a problem above.
        return Err(LoadError::Invalid(vec![diag.at(
            "",
            "found a part of the scenario that did not decode yet reported no problem (a firedrill bug), expected a scenario".into(),
        )]));
    };

    Ok(Drill {
        file: path.to_path_buf(),
        sha256: hex(&Sha256::digest(text.as_bytes())),
        scenario,
        faults,
        targets: targets.resolved,
        vars: resolved,
    })
}

/// Every problem, in file order, each once.
fn invalid(mut errors: Vec<Diagnostic>) -> LoadError {
    errors.sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
    errors.dedup();
    LoadError::Invalid(errors)
}

/// `vars:`, one definition at a time. Returns the definitions that decoded and the
/// names of all of them (a name whose definition is broken is still declared).
fn decode_vars(
    section: Option<&Value>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> (BTreeMap<String, VarValue>, BTreeSet<String>) {
    let mut declared = BTreeMap::new();
    let mut names = BTreeSet::new();
    match section {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let name = key_text(k);
                names.insert(name.clone());
                match serde_path_to_error::deserialize::<_, VarValue>(v.clone()) {
                    Ok(value) => {
                        declared.insert(name, value);
                    }
                    Err(e) => errors.push(diag.serde(&format!("vars.{name}"), &e)),
                }
            }
        }
        Some(other) => {
            if let Err(e) =
                serde_path_to_error::deserialize::<_, BTreeMap<String, VarValue>>(other.clone())
            {
                errors.push(diag.serde("vars", &e));
            }
        }
    }
    (declared, names)
}

/// A placeholder repeated with a long value (a `--var` may be 128 KiB) would make
/// the text the parsers see many times the file's size. Counted on the raw text,
/// before anything is built.
fn expansion_beyond_limit(text: &str, resolved: &Resolved, diag: &Diags<'_>) -> Option<Diagnostic> {
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        if let Some((k, _)) = resolved.values.get_key_value(name) {
            *uses.entry(k.as_str()).or_default() += 1;
        }
        rest = &rest[start + 4 + len..];
    }
    let growth = |(name, n): (&&str, &usize)| resolved.values[*name].len().saturating_mul(*n);
    let total = uses
        .iter()
        .map(growth)
        .fold(text.len(), usize::saturating_add);
    if total <= limits::MAX_EXPANDED_BYTES {
        return None;
    }
    let (name, n) = uses.iter().max_by_key(|u| growth(*u))?;
    Some(diag.at(
        &format!("vars.{name}"),
        format!(
            "found var `{name}` ({} bytes) used {n} times, making about {total} bytes of text, expected at most {} bytes after substitution",
            resolved.values[*name].len(),
            limits::MAX_EXPANDED_BYTES
        ),
    ))
}

/// The JSON equivalent of a YAML value, for deserializing the typed scenario.
///
/// One-key maps stay one-key maps, which is how serde's externally tagged enums read
/// from JSON; a YAML tag (`!http { ... }`) becomes the same one-key map, so both
/// spellings work. Non-string keys become their text; numbers that JSON cannot hold
/// (`.nan`, `.inf`) become strings, so the type error names what was written.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                J::from(u)
            } else if let Some(i) = n.as_i64() {
                J::from(i)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| J::String(n.to_string()), J::Number)
            }
        }
        Value::String(s) => J::String(s.clone()),
        Value::Sequence(seq) => J::Array(seq.iter().map(to_json).collect()),
        Value::Mapping(m) => J::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let mut o = serde_json::Map::new();
            o.insert(tag.trim_start_matches('!').to_string(), to_json(&t.value));
            J::Object(o)
        }
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `json: { path: …, eqq: 1 }` fails as "did not match any variant" of the untagged
/// one-or-many; decode it again as what it was meant to be, to report the real
/// problem (here: the unknown field `eqq`) at its place.
///
/// `item` is what was decoded, found at dotted path `base`.
fn refine_untagged(
    item: &serde_json::Value,
    base: &str,
    e: &serde_path_to_error::Error<serde_json::Error>,
    diag: &Diags<'_>,
) -> Diagnostic {
    use crate::probe::expect::JsonCheck;
    let general = diag.serde(base, e);
    let rel = e.path().to_string();
    let path = if rel == "." {
        base.to_string()
    } else {
        join(base, &rel)
    };
    if !e.inner().to_string().contains("untagged enum OneOrMany") || !path.ends_with(".json") {
        return general;
    }
    let again = match json_at(item, &rel) {
        Some(v @ serde_json::Value::Array(_)) => {
            serde_path_to_error::deserialize::<_, Vec<JsonCheck>>(v.clone()).err()
        }
        Some(v) => serde_path_to_error::deserialize::<_, JsonCheck>(v.clone()).err(),
        None => None,
    };
    match again {
        Some(inner) => diag.serde(&path, &inner),
        None => general,
    }
}

/// The value at a dotted path (`prechecks[0].expect.json`) of a JSON document.
fn json_at<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let mut v = doc;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            v = v.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rel.to_string(),
        (false, false) if rel.starts_with('[') => format!("{base}{rel}"),
        _ => format!("{base}.{rel}"),
    }
}

/// serde_yaml appends " at line L column C" to some messages; we print positions ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Splits `prefix` + "`name`" + rest into (name, rest).
fn backticked<'m>(msg: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
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
fn tidy(msg: &str) -> String {
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

struct Diags<'a> {
    file: &'a str,
    index: &'a SpanIndex,
    text: &'a str,
    /// Secret var values, masked in every message once vars are resolved: a value
    /// echoed by a message (`found `…``) may have come from one.
    secrets: Option<&'a crate::secrets::Redactor>,
}

impl Diags<'_> {
    fn make(&self, path: &str, pos: Option<super::span::Pos>, message: String) -> Diagnostic {
        let pos = pos.unwrap_or(super::span::Pos { line: 1, column: 1 });
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
    fn at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate(path), message)
    }
    /// At the value of `path` (where "this value" starts).
    fn value_at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate_value(path), message)
    }
    /// At the `{{name}}` inside the string value of `path` when it can be found on
    /// the value's line, else at the value.
    fn placeholder_at(&self, path: &str, name: &str, message: String) -> Diagnostic {
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
    fn yaml(&self, e: &serde_yaml::Error) -> Diagnostic {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let at = super::span::Pos { line, column };
        let full = e.to_string();
        if full.contains("more than one document") {
            // serde_yaml gives no position; the second document starts at a `---`
            // after some content.
            let mut content = false;
            for (n, l) in self.text.lines().enumerate() {
                if l.starts_with("---") && content {
                    return self.make(
                        "",
                        Some(super::span::Pos {
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
            Some(super::span::Pos {
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
    fn serde<E: fmt::Display>(&self, base: &str, e: &serde_path_to_error::Error<E>) -> Diagnostic {
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

/// Values of the vars that decoded, with the `--var` overrides of declared names
/// (`names` holds every declared name, including those whose definition is broken).
fn resolve_vars(
    declared: &BTreeMap<String, VarValue>,
    names: &BTreeSet<String>,
    overrides: &[(String, String)],
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Resolved {
    let mut r = Resolved::default();
    for (name, v) in declared {
        if !vars::is_var_name(name) {
            errors.push(diag.at(
                &format!("vars.{name}"),
                format!("found var name `{name}`, expected letters, digits, `_` or `-`, starting with a letter or `_` (other names cannot be used as `{{{{name}}}}`)"),
            ));
        }
        match v {
            VarValue::Literal(s) => {
                r.values.insert(name.clone(), s.clone());
            }
            VarValue::Env(e) => {
                match std::env::var(&e.env).ok().or_else(|| e.default.clone()) {
                    Some(val) => {
                        r.values.insert(name.clone(), val);
                    }
                    None => errors.push(diag.value_at(
                        &format!("vars.{name}.env"),
                        format!(
                            "found environment variable `{}` unset and no `default`, expected it to be set (or a `default:` for `{name}`)",
                            e.env
                        ),
                    )),
                }
                r.secret.insert(name.clone(), e.secret);
            }
        }
    }
    for (k, v) in overrides {
        if !names.contains(k) {
            let known = names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            // The value is not shown: it may be a secret. The position is where the
            // variable would have to be declared.
            errors.push(diag.at(
                "vars",
                format!(
                    "found `--var {k}=…` on the command line, expected one of the vars declared here ({})",
                    if known.is_empty() { "none declared" } else { &known }
                ),
            ));
            continue;
        }
        r.values.insert(k.clone(), v.clone());
    }
    r
}

/// The targets a scenario may name.
struct Targets {
    /// Every name that may be used: `local` and each one defined, even where its
    /// definition is broken (that is reported at the definition, not at each use).
    names: BTreeSet<String>,
    /// The definitions that decoded, `local` included.
    resolved: BTreeMap<String, Target>,
}

fn resolve_targets(parsed: &Parsed, diag: &Diags<'_>, errors: &mut Vec<Diagnostic>) -> Targets {
    let mut targets = Targets {
        names: BTreeSet::from(["local".to_string()]),
        resolved: BTreeMap::from([("local".to_string(), Target::Local)]),
    };
    for (name, spec) in &parsed.targets {
        if name == "local" {
            errors.push(diag.at(
                "targets.local",
                "found a definition of `local`, expected another name: `local` is built in".into(),
            ));
            continue;
        }
        targets.names.insert(name.clone());
        if let Some(spec) = spec {
            for (p, msg) in spec.validate() {
                errors.push(diag.value_at(&format!("targets.{name}.{p}"), msg));
            }
            targets
                .resolved
                .insert(name.clone(), Target::from_spec(spec));
        }
    }
    targets
}

fn undefined_target(diag: &Diags<'_>, path: &str, name: &str, targets: &Targets) -> Diagnostic {
    let known = targets
        .names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    diag.value_at(
        path,
        format!("found target `{name}`, expected one of the defined targets ({known})"),
    )
}

/// Items of a section that decoded, with their position in the file's list.
fn decoded<T>(items: &[Option<T>]) -> impl Iterator<Item = (usize, &T)> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
}

/// Checks across fields, on whatever decoded (a step that did not decode was
/// reported already and is skipped here).
fn validate(scenario: &Parsed, targets: &Targets, diag: &Diags<'_>, errors: &mut Vec<Diagnostic>) {
    if let Some(api_version) = &scenario.api_version
        && api_version != API_VERSION
    {
        errors.push(diag.value_at(
            "apiVersion",
            format!("found `{api_version}`, expected `{API_VERSION}`"),
        ));
    }
    if let Some(metadata) = &scenario.metadata {
        let name = &metadata.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(diag.value_at(
                "metadata.name",
                format!("found `{name}`, expected a non-empty name of letters, digits, `-`, `_` or `.` (it names report directories)"),
            ));
        }
    }
    if scenario.faults_written && scenario.faults.is_empty() {
        errors.push(diag.value_at(
            "faults",
            "found an empty fault list, expected at least one fault".into(),
        ));
    }
    if let Some(objectives) = &scenario.objectives {
        if let Some(rto) = objectives.rto
            && rto.0.is_zero()
        {
            errors.push(diag.value_at(
                "objectives.rto",
                "found `0s`, expected a positive duration".into(),
            ));
        }
        if objectives.max_duration.0.is_zero() {
            errors.push(diag.value_at(
                "objectives.max_duration",
                "found `0s`, expected a positive duration".into(),
            ));
        }
    }

    unique_names(
        "prechecks",
        decoded(&scenario.prechecks).map(|(i, c)| (i, c.name.as_str())),
        diag,
        errors,
    );
    unique_names(
        "verifications",
        decoded(&scenario.verifications).map(|(i, c)| (i, c.name.as_str())),
        diag,
        errors,
    );
    unique_names(
        "guards",
        decoded(&scenario.guards).map(|(i, c)| (i, c.name.as_str())),
        diag,
        errors,
    );
    unique_names(
        "faults",
        decoded(&scenario.faults).map(|(i, c)| (i, c.name.as_str())),
        diag,
        errors,
    );
    unique_names(
        "recovery",
        decoded(&scenario.recovery).map(|(i, c)| (i, c.name.as_str())),
        diag,
        errors,
    );

    for (section, checks) in [
        ("prechecks", &scenario.prechecks),
        ("verifications", &scenario.verifications),
    ] {
        for (i, c) in decoded(checks) {
            let base = format!("{section}[{i}]");
            if c.within.is_some() && c.hold_for.is_some() {
                errors.push(diag.at(
                    &format!("{base}.for"),
                    "found both `within` and `for`, expected one of them: `within` waits until it holds, `for` requires it to hold throughout".into(),
                ));
            }
            if c.interval.0.is_zero() {
                errors.push(diag.value_at(
                    &format!("{base}.interval"),
                    "found `0s`, expected a positive poll interval".into(),
                ));
            }
            probe_checks(&base, &c.probe, &c.expect, targets, diag, errors);
        }
    }
    unique_names(
        "traffic",
        decoded(&scenario.traffic).map(|(i, t)| (i, t.name.as_str())),
        diag,
        errors,
    );
    for (i, t) in decoded(&scenario.traffic) {
        for (p, msg) in t.validate() {
            errors.push(diag.value_at(&format!("traffic[{i}].{p}"), msg));
        }
    }
    for (i, g) in decoded(&scenario.guards) {
        let base = format!("guards[{i}]");
        if g.breach_after == 0 {
            errors.push(diag.value_at(
                &format!("{base}.breach_after"),
                "found 0, expected at least 1".into(),
            ));
        }
        if g.interval.0.is_zero() {
            errors.push(diag.value_at(
                &format!("{base}.interval"),
                "found `0s`, expected a positive poll interval".into(),
            ));
        }
        probe_checks(&base, &g.probe, &g.expect, targets, diag, errors);
    }
    for (i, r) in decoded(&scenario.recovery) {
        if !targets.names.contains(&r.command.target) {
            errors.push(undefined_target(
                diag,
                &format!("recovery[{i}].command.target"),
                &r.command.target,
                targets,
            ));
        }
        if r.command.run.trim().is_empty() {
            errors.push(diag.value_at(
                &format!("recovery[{i}].command.run"),
                "found an empty command, expected a shell command line".into(),
            ));
        }
    }
}

fn probe_checks(
    base: &str,
    probe: &crate::probe::ProbeSpec,
    expect: &crate::probe::Expect,
    targets: &Targets,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let pbase = format!("{base}.probe.{}", probe.kind());
    if let Some(t) = probe.target()
        && !targets.names.contains(t)
    {
        errors.push(undefined_target(
            diag,
            &format!("{pbase}.target"),
            t,
            targets,
        ));
    }
    for (p, msg) in probe.validate() {
        errors.push(diag.value_at(&join(&pbase, &p), tidy(&msg)));
    }
    for (p, msg) in expect.validate() {
        errors.push(diag.value_at(&join(&format!("{base}.expect"), &p), tidy(&msg)));
    }
}

/// `names` are (position in the section, name) of the steps that decoded.
fn unique_names<'a>(
    section: &str,
    names: impl Iterator<Item = (usize, &'a str)>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names {
        if let Some(first) = seen.get(n) {
            let first_pos = diag.index.locate_value(&format!("{section}[{first}].name"));
            errors.push(diag.value_at(
                &format!("{section}[{i}].name"),
                format!(
                    "found duplicate name `{n}` (first used at line {}), expected step names to be unique within `{section}`",
                    first_pos.map_or(0, |p| p.line)
                ),
            ));
        } else {
            seen.insert(n, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: firedrill/v1
kind: Scenario
metadata: { name: t }
vars:
  port: 8080
targets:
  appns: { netns: app }
prechecks:
  - name: up
    probe: { http: { url: \"http://127.0.0.1:{{port}}/health\" } }
  - name: tcp
    probe:
      tcp: { address: \"127.0.0.1:{{port}}\", target: appns }
faults:
  - name: kill
    kind: process_kill
    with: { name: relay }
";

    fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<Diagnostic> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match load_str(text, Path::new("s.yaml"), &vars) {
            Ok(_) => vec![],
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    fn one(text: &str) -> String {
        let e = errors(text, &[]);
        assert_eq!(e.len(), 1, "{e:#?}");
        format!(
            "{}:{}: {}: {}",
            e[0].line, e[0].column, e[0].path, e[0].message
        )
    }

    #[test]
    fn probes_and_targets_written_as_one_key_maps_load() {
        // serde_yaml 0.9 cannot decode these enums from a Value; the loader must.
        let d = load_str(GOOD, Path::new("s.yaml"), &[]).unwrap();
        assert_eq!(d.scenario.prechecks[0].probe.kind(), "http");
        assert_eq!(d.scenario.prechecks[1].probe.target(), Some("appns"));
        assert_eq!(d.targets.len(), 2);
    }

    #[test]
    fn yaml_tags_are_accepted_for_enums_too() {
        let text = GOOD
            .replace("probe: { http: { url:", "probe: !http { url:")
            .replace("/health\" } }", "/health\" }");
        let d = load_str(&text, Path::new("s.yaml"), &[]).unwrap();
        assert_eq!(d.scenario.prechecks[0].probe.kind(), "http");
    }

    #[test]
    fn unknown_fields_are_reported_once_at_their_key() {
        let text = GOOD.replace("{ name: relay }", "{ name: relay, sigal: KILL }");
        assert_eq!(
            one(&text),
            "17:26: faults[0].with.sigal: found unknown field `sigal`, expected one of `pid`, `pidfile`, `name`, `pattern`, `cgroup`, `tree`, `count`, `all`, `signal`, `verify_timeout`"
        );
        let text = GOOD.replace("target: appns }", "target: appns, tries: 3 }");
        assert!(
            one(&text)
                .starts_with("13:60: prechecks[1].probe.tcp.tries: found unknown field `tries`")
        );
    }

    #[test]
    fn missing_fields_name_the_field_and_point_at_its_map() {
        let text = GOOD.replace("metadata: { name: t }", "metadata: { owner: me }");
        assert_eq!(
            one(&text),
            "3:1: metadata.name: found no `name`, expected this required field"
        );
    }

    #[test]
    fn an_unknown_probe_kind_points_at_the_kind_key() {
        let text = GOOD.replace("      tcp: {", "      tpc: {");
        assert_eq!(
            one(&text),
            "13:7: prechecks[1].probe.tpc: found `tpc`, expected one of `http`, `tcp`, `command`, `traffic`"
        );
    }

    #[test]
    fn wrong_types_are_said_in_plain_words() {
        let text = GOOD.replace("{ name: relay }", "{ name: relay, count: -2 }");
        assert_eq!(
            one(&text),
            "17:33: faults[0].with.count: found the number `-2`, expected a whole number, 0 or more"
        );
        let text = GOOD.replace("{ name: relay }", "{ name: relay, all: [1] }");
        assert!(one(&text).contains("found a list, expected a boolean"));
    }

    #[test]
    fn an_undefined_placeholder_points_inside_the_string() {
        let text = GOOD.replace("127.0.0.1:{{port}}/health", "127.0.0.1:{{ prot }}/health");
        assert_eq!(
            one(&text),
            "10:45: prechecks[0].probe.http.url: found `{{prot}}`, expected one of the declared vars (port)"
        );
    }

    #[test]
    fn an_override_of_an_undeclared_var_points_at_vars_and_hides_the_value() {
        let e = errors(GOOD, &[("prot", "s3cret")]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].file.as_str(), e[0].line, e[0].column),
            ("s.yaml", 4, 1)
        );
        assert!(!e[0].message.contains("s3cret"), "{}", e[0].message);
        // A declared one is fine and wins.
        let d = load_str(GOOD, Path::new("s.yaml"), &[("port".into(), "9".into())]).unwrap();
        assert_eq!(d.vars.values["port"], "9");
    }

    #[test]
    fn an_unset_env_var_points_at_its_name() {
        let text = GOOD.replace(
            "  port: 8080\n",
            "  port: 8080\n  token: { env: FIREDRILL_UNIT_TEST_SURELY_UNSET }\n",
        );
        assert_eq!(
            one(&text),
            "6:17: vars.token.env: found environment variable `FIREDRILL_UNIT_TEST_SURELY_UNSET` unset and no `default`, expected it to be set (or a `default:` for `token`)"
        );
    }

    #[test]
    fn duplicate_keys_point_at_the_second_one() {
        let text = GOOD.replace(
            "kind: process_kill\n",
            "kind: process_kill\n    kind: process_kill\n",
        );
        assert_eq!(
            one(&text),
            "17:5: faults[0].kind: found `kind` a second time in the same map (first at line 16 column 5), expected each key once"
        );
    }

    #[test]
    fn an_unclosed_quote_points_at_the_opening_quote() {
        let text = GOOD.replace(
            "address: \"127.0.0.1:{{port}}\"",
            "address: \"127.0.0.1:{{port}}",
        );
        let msg = one(&text);
        assert!(
            msg.starts_with("13:23: prechecks[1].probe.tcp.address: found a string opened with \" that is not closed on its line"),
            "{msg}"
        );
    }

    #[test]
    fn bad_indentation_names_the_mapping() {
        let text = GOOD.replace("    with: { name: relay }", "      with: { name: relay }");
        let msg = one(&text);
        // `with` indented under `kind` continues its value: the parser stops at the `:`.
        assert!(
            msg.starts_with(
                "17:11: faults[0].kind: found invalid YAML (mapping values are not allowed"
            ),
            "{msg}"
        );
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        let text = GOOD.replace("{ name: relay }", "{ pattern: \"a(b\" }");
        assert_eq!(
            one(&text),
            "17:22: faults[0].with.pattern: found `a(b`, expected a regular expression (unclosed group at character 2)"
        );
    }

    #[test]
    fn an_unknown_key_in_a_json_check_is_found_through_the_untagged_enum() {
        let text = GOOD.replace(
            "/health\" } }\n",
            "/health\" } }\n    expect: { json: [{ path: $.a, eq: 1 }, { path: $.b, gtt: 1 }] }\n",
        );
        assert_eq!(
            one(&text),
            "11:57: prechecks[0].expect.json[1].gtt: found unknown field `gtt`, expected one of `path`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `exists`"
        );
    }

    #[test]
    fn a_target_with_two_kinds_is_one_error() {
        let text = GOOD.replace("{ netns: app }", "{ netns: app, ssh: x }");
        assert_eq!(
            one(&text),
            "7:10: targets.appns: found a map without exactly one key, expected a map with a single key (the kind)"
        );
    }

    #[test]
    fn go_templates_are_not_vars_but_bad_var_names_are_errors() {
        let text = GOOD.replace(
            "tcp: { address",
            "command: { run: \"docker inspect -f '{{.State.Running}}' relay\" }\n      x: { address",
        );
        // (the probe now has two keys; only the template matters here)
        let e = errors(&text, &[]);
        assert!(e.iter().all(|d| !d.message.contains("State")), "{e:#?}");
        let text = GOOD.replace("  port: 8080\n", "  port: 8080\n  relay.url: x\n");
        assert!(one(&text).starts_with("6:3: vars.relay.url: found var name `relay.url`"));
    }

    #[test]
    fn tabs_and_second_documents_are_named() {
        let text = GOOD.replace("    kind: process_kill", "\tkind: process_kill");
        assert!(one(&text).contains("expected spaces for indentation (YAML does not allow tabs)"));
        let text = format!("{GOOD}---\n{GOOD}");
        assert_eq!(
            one(&text),
            "18:1: : found a second YAML document (`---`), expected one scenario per file"
        );
    }

    fn located(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        errors(text, vars)
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.path))
            .collect()
    }

    #[test]
    fn every_bad_field_of_one_step_is_reported() {
        // An unknown key, a type error and a bad duration in one step, and an
        // undefined target in another: serde alone stops at the first.
        let text = GOOD
            .replace(
                "    probe: { http:",
                "    retries: lots
    within: 1,5s
    probe: { http:",
            )
            .replace("target: appns }", "target: appns, tries: 3 }")
            .replace(
                "with: { name: relay }",
                "with: { name: relay }
    target: gw9",
            );
        assert_eq!(
            located(&text, &[]),
            [
                "10:14: prechecks[0].retries",
                "11:13: prechecks[0].within",
                "15:60: prechecks[1].probe.tcp.tries",
                "20:13: faults[0].target",
            ]
        );
    }

    #[test]
    fn a_missing_field_is_reported_once_even_after_its_value_was_cut_out() {
        // `name` has the wrong type; decoding again without it must not also say
        // that `name` is missing.
        let text = GOOD.replace("  - name: kill\n", "  - name: [kill]\n");
        assert_eq!(
            one(&text),
            "15:11: faults[0].name: found a list, expected a string"
        );
    }

    #[test]
    fn every_missing_required_section_is_reported() {
        let e = located("targets: {}\n", &[]);
        assert_eq!(
            e,
            [
                "1:1: apiVersion",
                "1:1: faults",
                "1:1: kind",
                "1:1: metadata"
            ]
        );
    }

    #[test]
    fn a_broken_var_hides_neither_other_problems_nor_adds_noise_where_it_is_used() {
        // `port` is broken: its uses are not reported again as undefined, and the
        // URL holding `{{port}}` is not judged; the bad fault field still is.
        let text = GOOD
            .replace("  port: 8080\n", "  port: [8080]\n")
            .replace("{ name: relay }", "{ name: relay, count: x }");
        assert_eq!(
            located(&text, &[]),
            ["5:9: vars.port", "17:33: faults[0].with.count"]
        );
        // An undefined placeholder is reported once, not also as a bad duration.
        let text = GOOD.replace(
            "with: { name: relay }",
            "with: { name: relay }\n    ttl: \"{{ttl}}\"",
        );
        assert_eq!(
            one(&text),
            "18:11: faults[0].ttl: found `{{ttl}}`, expected one of the declared vars (port)"
        );
    }

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

    #[test]
    fn json_bridge_keeps_numbers_and_stringifies_keys() {
        let v: Value = serde_yaml::from_str(
            "{1: a, true: b, n: -3, f: 0.5, big: 18446744073709551615, nan: .nan}",
        )
        .unwrap();
        let j = to_json(&v);
        assert_eq!(j["1"], "a");
        assert_eq!(j["true"], "b");
        assert_eq!(j["n"], -3);
        assert_eq!(j["f"], 0.5);
        assert_eq!(j["big"], u64::MAX);
        assert_eq!(j["nan"], ".nan");
    }
}
