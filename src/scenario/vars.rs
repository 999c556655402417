//! `vars:` and `{{name}}` substitution.
//!
//! A variable is either a plain scalar or a reference to an environment variable
//! (`{ env: WECOM_SECRET, secret: true }`). Secret values are substituted like any
//! other but are remembered so that reports and logs can redact them.
//!
//! Only `{{name}}` with a name of letters, digits, `_` and `-` (not starting with a
//! digit or `-`) is a placeholder. Anything else between braces, such as the Go
//! templates of `docker inspect -f '{{.State.Running}}'` or
//! `kubectl -o go-template='{{range .items}}…'`, is left as written: drill commands
//! use those all the time.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// A variable's definition.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum VarValue {
    /// A literal value (strings, numbers and booleans are all kept as text).
    Literal(String),
    /// A value read from the environment when the scenario is loaded.
    Env(EnvVar),
}

/// A variable read from the environment.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name of the environment variable.
    pub env: String,
    /// Value used when the environment variable is not set; without it, an unset variable is an error.
    #[serde(default)]
    pub default: Option<String>,
    /// Redact the value from reports, journals and logs.
    #[serde(default)]
    pub secret: bool,
}

impl<'de> Deserialize<'de> for VarValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Decide on the shape first so that errors inside `{ env: ... }` keep their
        // precise message instead of serde's "did not match any variant".
        match Value::deserialize(d)? {
            Value::String(s) => Ok(VarValue::Literal(s)),
            Value::Number(n) => Ok(VarValue::Literal(n.to_string())),
            Value::Bool(b) => Ok(VarValue::Literal(b.to_string())),
            m @ Value::Mapping(_) => EnvVar::deserialize(m)
                .map(VarValue::Env)
                .map_err(D::Error::custom),
            Value::Null => Err(D::Error::custom(
                "found an empty value, expected a string, number, boolean or `{ env: NAME }`",
            )),
            other => Err(D::Error::custom(format!(
                "found {}, expected a string, number, boolean or `{{ env: NAME }}`",
                kind_of(&other)
            ))),
        }
    }
}

impl JsonSchema for VarValue {
    fn schema_name() -> Cow<'static, str> {
        "VarValue".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let env = generator.subschema_for::<EnvVar>();
        json_schema!({
            "description": "A literal value, or `{ env: NAME, default: ..., secret: true }`.",
            "anyOf": [ { "type": ["string", "number", "boolean"] }, env ]
        })
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Resolved variables: name -> value, plus which names are secret.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub values: BTreeMap<String, String>,
    pub secret: BTreeMap<String, bool>,
}

impl Resolved {
    /// Secret values, longest first (so that redaction never leaves a suffix behind).
    pub fn secret_values(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .values
            .iter()
            .filter(|(k, val)| self.secret.get(*k).copied().unwrap_or(false) && !val.is_empty())
            .map(|(_, val)| val.clone())
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    }

    /// The variables as they may be shown in a report.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, v)| {
                let shown = if self.secret.get(k).copied().unwrap_or(false) {
                    "***".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

/// A `{{name}}` that names no variable, found while substituting.
#[derive(Debug)]
pub struct Unresolved {
    pub path: String,
    pub name: String,
}

/// Replaces `{{name}}` in every string of `v` (recursively). `path` is the dotted path
/// of `v`, used to report unresolved names.
pub fn substitute(v: &mut Value, vars: &Resolved, path: &str, errors: &mut Vec<Unresolved>) {
    match v {
        Value::String(s) => {
            if let Some(new) = substitute_str(s, vars, path, errors) {
                *v = new;
            }
        }
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                substitute(item, vars, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                substitute(item, vars, &p, errors);
            }
        }
        Value::Tagged(t) => substitute(&mut t.value, vars, path, errors),
        _ => {}
    }
}

/// Whether `name` can be a variable: letters, digits, `_`, `-`, not starting with a
/// digit or `-`.
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn substitute_str(
    s: &str,
    vars: &Resolved,
    path: &str,
    errors: &mut Vec<Unresolved>,
) -> Option<Value> {
    if !s.contains("{{") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        if !is_var_name(name) {
            // Not ours (a Go template, say): keep it as written.
            out.push_str(&rest[start..start + 4 + len]);
        } else {
            match vars.values.get(name) {
                Some(val) => out.push_str(val),
                None => errors.push(Unresolved {
                    path: path.to_string(),
                    name: name.to_string(),
                }),
            }
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    // A string that is exactly one placeholder takes the variable's natural type, so
    // `port: "{{port}}"` becomes a number where a number is expected.
    let t = s.trim();
    let whole = (t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1)
        .then(|| vars.values.get(t[2..t.len() - 2].trim()))
        .flatten();
    if let Some(val) = whole
        && let Ok(parsed @ (Value::Number(_) | Value::Bool(_))) = serde_yaml::from_str::<Value>(val)
    {
        return Some(parsed);
    }
    Some(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Resolved {
        let mut r = Resolved::default();
        r.values.insert("host".into(), "127.0.0.1".into());
        r.values.insert("port".into(), "8080".into());
        r
    }

    #[test]
    fn substitutes_inside_strings_and_keeps_types_for_whole_placeholders() {
        let mut v: Value =
            serde_yaml::from_str("url: http://{{ host }}:{{port}}/x\nport: '{{port}}'\n").unwrap();
        let mut errs = vec![];
        substitute(&mut v, &vars(), "", &mut errs);
        assert!(errs.is_empty());
        assert_eq!(v["url"], Value::String("http://127.0.0.1:8080/x".into()));
        assert_eq!(v["port"], Value::Number(8080.into()));
    }

    #[test]
    fn reports_unknown_names_with_their_path() {
        let mut v: Value = serde_yaml::from_str("a: [x, '{{nope}}']\n").unwrap();
        let mut errs = vec![];
        substitute(&mut v, &vars(), "", &mut errs);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "a[1]");
        assert_eq!(errs[0].name, "nope");
    }

    #[test]
    fn leaves_templates_that_are_not_var_names_alone() {
        let text =
            "run: docker inspect -f '{{.State.Running}}' {{host}} && echo '{{ range .x }}{{ }}'\n";
        let mut v: Value = serde_yaml::from_str(text).unwrap();
        let mut errs = vec![];
        substitute(&mut v, &vars(), "", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            v["run"],
            Value::String(
                "docker inspect -f '{{.State.Running}}' 127.0.0.1 && echo '{{ range .x }}{{ }}'"
                    .into()
            )
        );
    }

    #[test]
    fn var_names() {
        for ok in ["a", "relay_url", "relay-url", "_x", "A1"] {
            assert!(is_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", ".State", "a b", "a.b", "range .x"] {
            assert!(!is_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn an_unterminated_placeholder_is_kept() {
        let mut v = Value::String("echo {{host".into());
        let mut errs = vec![];
        substitute(&mut v, &vars(), "x", &mut errs);
        assert!(errs.is_empty());
        assert_eq!(v, Value::String("echo {{host".into()));
    }
}
