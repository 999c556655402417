//! `vars:` and `{{name}}` substitution.
//!
//! A variable is either a plain scalar or a reference to an environment variable
//! (`{ env: WECOM_SECRET, secret: true }`). Secret values are substituted like any
//! other but are remembered so that reports and logs can redact them.
//!
//! Shell-by-design fields (`command.run` of command probes and recovery steps) are
//! command lines: every var value is pasted into them as text, except a secret's,
//! which would then be readable by every local user in `ps`. There a secret
//! placeholder becomes a reference to an environment variable
//! (`${FIREDRILL_SECRET_<NAME>}`, quoted to fit where it stands) that the engine sets
//! for that child only. See [`shell_reference`].
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

    /// The environment variable through which each secret var reaches shell commands:
    /// `FIREDRILL_SECRET_` and the name in upper case with `-` as `_`; a name that two
    /// vars would share gets `_2`, `_3`… in name order.
    pub fn secret_env_names(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut taken = std::collections::BTreeSet::new();
        for (name, secret) in &self.secret {
            if !secret {
                continue;
            }
            let base = format!(
                "FIREDRILL_SECRET_{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            let mut env = base.clone();
            let mut n = 2;
            while !taken.insert(env.clone()) {
                env = format!("{base}_{n}");
                n += 1;
            }
            out.insert(name.clone(), env);
        }
        out
    }

    /// The environment a shell command `line` needs: the secrets it refers to.
    pub fn env_for(&self, line: &str) -> Vec<(String, String)> {
        self.secret_env_names()
            .into_iter()
            .filter(|(_, env)| line.contains(&format!("${{{env}}}")))
            .filter_map(|(name, env)| Some((env, self.values.get(&name)?.clone())))
            .collect()
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

/// Whether the field at `path` is a shell command line by design: `command.run` of a
/// command probe (in prechecks, verifications, guards or indicators; also in the `!command` tag
/// form) or of a recovery step.
pub(crate) fn is_shell_field(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let section = |s: &str, names: &[&str]| {
        names
            .iter()
            .any(|n| s.strip_prefix(n).is_some_and(|r| r.starts_with('[')))
    };
    match parts.as_slice() {
        [s, "command", "run"] => section(s, &["recovery"]),
        [s, "probe", "command", "run"] | [s, "probe", "run"] => {
            section(s, &["prechecks", "verifications", "guards", "indicators"])
        }
        _ => false,
    }
}

/// Where a shell would be at the end of `line`: in single quotes, double quotes or
/// neither (backslash escapes followed; `$( )` and here-documents are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    None,
    Single,
    Double,
}

fn quoting_at_end(line: &str) -> Quoting {
    let mut q = Quoting::None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (q, c) {
            (Quoting::None | Quoting::Double, '\\') => {
                chars.next();
            }
            (Quoting::None, '\'') => q = Quoting::Single,
            (Quoting::Single, '\'') => q = Quoting::None,
            (Quoting::None, '"') => q = Quoting::Double,
            (Quoting::Double, '"') => q = Quoting::None,
            _ => {}
        }
    }
    q
}

/// What a secret placeholder becomes in a shell line that so far reads `before`: a
/// reference to `env` that expands to the value as one word wherever it stands.
/// Unquoted it is double-quoted (so a secret is never split into words or globbed);
/// inside `"…"` it is bare; inside `'…'`, where nothing expands, the single quotes
/// are closed around it and reopened.
pub(crate) fn shell_reference(before: &str, env: &str) -> String {
    match quoting_at_end(before) {
        Quoting::None => format!("\"${{{env}}}\""),
        Quoting::Double => format!("${{{env}}}"),
        Quoting::Single => format!("'\"${{{env}}}\"'"),
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
            let secret_env = is_shell_field(path)
                .then(|| vars.secret_env_names().remove(name))
                .flatten();
            match (vars.values.get(name), secret_env) {
                (Some(_), Some(env)) => {
                    let r = shell_reference(&out, &env);
                    out.push_str(&r);
                }
                (Some(val), None) => out.push_str(val),
                (None, _) => errors.push(Unresolved {
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
    let whole = (t.starts_with("{{")
        && !is_shell_field(path)
        && t.ends_with("}}")
        && t.matches("{{").count() == 1)
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

    fn with_secret() -> Resolved {
        let mut r = vars();
        r.values.insert("token".into(), "s3 cr3t'\"".into());
        r.secret.insert("token".into(), true);
        r.values.insert("to-ken".into(), "other".into());
        r.secret.insert("to-ken".into(), true);
        r
    }

    #[test]
    fn secrets_reach_shell_fields_as_environment_references() {
        let text = r#"
prechecks:
  - probe:
      command:
        run: echo {{token}} "x {{token}}" 'y {{token}}' {{host}}
    expect: { stdout_contains: "{{token}}" }
guards:
  - probe: !command { run: "{{to-ken}}" }
recovery:
  - command: { run: "curl -H 'k: {{token}}'" }
"#;
        let mut v: Value = serde_yaml::from_str(text).unwrap();
        let mut errs = vec![];
        for key in ["prechecks", "guards", "recovery"] {
            substitute(&mut v[key], &with_secret(), key, &mut errs);
        }
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            v["prechecks"][0]["probe"]["command"]["run"],
            Value::String(
                r#"echo "${FIREDRILL_SECRET_TOKEN}" "x ${FIREDRILL_SECRET_TOKEN}" 'y '"${FIREDRILL_SECRET_TOKEN}"'' 127.0.0.1"#
                    .into()
            )
        );
        // Not a shell field: the value itself.
        assert_eq!(
            v["prechecks"][0]["expect"]["stdout_contains"],
            Value::String("s3 cr3t'\"".into())
        );
        let Value::Tagged(t) = &v["guards"][0]["probe"] else {
            panic!("{v:?}")
        };
        assert_eq!(
            t.value["run"],
            Value::String(r#""${FIREDRILL_SECRET_TO_KEN}""#.into())
        );
        assert_eq!(
            v["recovery"][0]["command"]["run"],
            Value::String(r#"curl -H 'k: '"${FIREDRILL_SECRET_TOKEN}"''"#.into())
        );
    }

    /// The references expand, through a real `sh`, to the exact value, one word.
    #[test]
    fn a_shell_expands_the_references_to_the_value() {
        let r = with_secret();
        let mut line = Value::String(
            r#"printf '[%s]' {{token}} "{{token}}" '{{token}}' 'a{{token}}b'"#.into(),
        );
        let mut errs = vec![];
        substitute(&mut line, &r, "recovery[0].command.run", &mut errs);
        let line = line.as_str().unwrap().to_string();
        assert!(!line.contains("cr3t"), "{line}");
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .envs(r.env_for(&line))
            .output()
            .unwrap();
        let v = "s3 cr3t'\"";
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("[{v}][{v}][{v}][a{v}b]")
        );
    }

    #[test]
    fn secret_env_names_never_collide() {
        let mut r = Resolved::default();
        for n in ["a-b", "a_b", "A_B", "plain"] {
            r.values.insert(n.into(), n.into());
            r.secret.insert(n.into(), n != "plain");
        }
        let names = r.secret_env_names();
        assert_eq!(names["A_B"], "FIREDRILL_SECRET_A_B");
        assert_eq!(names["a-b"], "FIREDRILL_SECRET_A_B_2");
        assert_eq!(names["a_b"], "FIREDRILL_SECRET_A_B_3");
        assert!(!names.contains_key("plain"));
        assert_eq!(
            r.env_for("x ${FIREDRILL_SECRET_A_B_2}"),
            vec![("FIREDRILL_SECRET_A_B_2".to_string(), "a-b".to_string())]
        );
    }

    #[test]
    fn shell_fields() {
        for yes in [
            "prechecks[0].probe.command.run",
            "verifications[12].probe.command.run",
            "guards[1].probe.run",
            "recovery[0].command.run",
        ] {
            assert!(is_shell_field(yes), "{yes}");
        }
        for no in [
            "prechecks[0].probe.command.target",
            "prechecks[0].probe.http.url",
            "recovery[0].name",
            "faults[0].with.run",
            "traffic[0].probe.run",
            "recovery.command.run",
        ] {
            assert!(!is_shell_field(no), "{no}");
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
