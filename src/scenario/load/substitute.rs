//! Vars: their definitions, their values and their substitution into the document.
//!
//! Vars come before anything else because every other field may use them. Each
//! definition is decoded on its own, so one bad definition hides no other; values
//! come from the file, the environment or a `--var` override. The growth that
//! substitution would cause is measured on the raw text before any of it is built,
//! and a placeholder left unresolved marks its field so its other problems are not
//! reported as noise.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_yaml::Value;

use super::decode::key_text;
use super::diagnostics::{Diagnostic, Diags, declared_list};
use super::limits;
use crate::scenario::vars::{self, Resolved, VarValue};

/// `vars:`, one definition at a time. Returns the definitions that decoded and the
/// names of all of them (a name whose definition is broken is still declared).
pub(super) fn decode_vars(
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

/// Values of the vars that decoded, with the `--var` overrides of declared names
/// (`names` holds every declared name, including those whose definition is broken).
pub(super) fn resolve_vars(
    declared: &BTreeMap<String, VarValue>,
    names: &BTreeSet<String>,
    overrides: &[super::var_file::Override],
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
    for o in overrides {
        let (k, v) = (&o.name, &o.value);
        if !names.contains(k) {
            let known = declared_list(names);
            // The value is not shown: it may be a secret. The position is where the
            // variable would have to be declared, or the var file's line.
            errors.push(match &o.origin {
                super::var_file::Origin::CommandLine => diag.at(
                    "vars",
                    format!(
                        "found `--var {k}=…` on the command line, expected one of the vars declared here ({known})"
                    ),
                ),
                super::var_file::Origin::File { file, line, column } => Diagnostic {
                    file: file.clone(),
                    line: *line,
                    column: *column,
                    path: k.clone(),
                    message: format!(
                        "found `{k}` in a var file, expected one of the vars declared in {} ({known})",
                        diag.file
                    ),
                },
            });
            continue;
        }
        r.values.insert(k.clone(), v.clone());
    }
    r
}

/// A placeholder repeated with a long value (a `--var` may be 128 KiB) would make
/// the text the parsers see many times the file's size. Counted on the raw text,
/// before anything is built.
pub(super) fn expansion_beyond_limit(
    text: &str,
    resolved: &Resolved,
    diag: &Diags<'_>,
) -> Option<Diagnostic> {
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

/// Substitutes the resolved values everywhere except in `vars:` itself, and reports
/// each placeholder that names no declared var. Returns the paths of the fields
/// that still hold a placeholder (`var_names` holds every declared name, including
/// those whose definition is broken: their uses were reported at the definition).
pub(super) fn substitute(
    doc: &mut Value,
    resolved: &Resolved,
    var_names: &BTreeSet<String>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> HashSet<String> {
    let mut unresolved = Vec::new();
    if let Value::Mapping(m) = doc {
        for (k, v) in m.iter_mut() {
            let key = k.as_str().unwrap_or_default().to_string();
            if key != "vars" {
                vars::substitute(v, resolved, &key, &mut unresolved);
            }
        }
    }
    // A field still holding a `{{placeholder}}` is not what the author meant: its
    // other problems (not a duration, not a URL) would be noise.
    let tainted: HashSet<String> = unresolved.iter().map(|u| u.path.clone()).collect();
    // The same name twice in one string is one mistake to fix.
    unresolved.dedup_by(|a, b| a.path == b.path && a.name == b.name);
    let known = declared_list(resolved.values.keys());
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
                "found `{{{{{}}}}}`, expected one of the declared vars ({known})",
                u.name,
            ),
        ));
    }
    tainted
}
