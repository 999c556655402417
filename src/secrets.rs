//! Process-wide secret values (vars marked `secret: true`), so that every path that
//! prints — log lines, the progress line — can redact them without threading the list
//! through every call. Reports are redacted on the run model itself (`report::redact`).

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds secret values (longest first, so no suffix of a longer secret is left behind).
pub fn register(values: impl IntoIterator<Item = String>) {
    let mut s = SECRETS.write().unwrap();
    s.extend(values.into_iter().filter(|v| !v.is_empty()));
    s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    s.dedup();
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let s = SECRETS.read().unwrap();
    if !s.iter().any(|v| text.contains(v.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for v in s.iter() {
        out = out.replace(v.as_str(), "***");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn longest_secret_first() {
        super::register(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(super::redact("key=abcdef;k2=abc"), "key=***;k2=***");
        assert_eq!(super::redact("nothing here"), "nothing here");
    }
}
