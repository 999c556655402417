//! Secret values (vars marked `secret: true`) and their redaction.
//!
//! A secret rarely travels as written: reqwest percent-encodes it in a URL (`%20`,
//! `%3C`), a form encodes a space as `+`, JSON logs escape quotes and backslashes
//! (`\"`, `\u003c` from some encoders), the HTML report escapes `<` as `&lt;` or
//! `&#x3C;`, a basic-auth header carries it in base64. A [`Redactor`] therefore
//! matches every character of a secret in any of those forms (mixed freely, as an
//! encoder leaves letters and digits alone and escapes only the rest), plus the
//! base64 of the secret at each of the three byte alignments.
//!
//! The process-wide registry lets every path that prints (log lines, the progress
//! line) redact without threading the list through every call. Reports are redacted
//! on the run model itself (`report::redact`), plans and validation errors with a
//! redactor built from the scenario's own vars.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::RwLock;

use regex::Regex;

/// What a secret is replaced with.
pub const MASK: &str = "***";

static REGISTRY: RwLock<Option<Redactor>> = RwLock::new(None);

/// Adds secret values to the process-wide registry.
pub fn register(values: impl IntoIterator<Item = String>) {
    let mut r = REGISTRY.write().unwrap();
    let mut all = r.as_ref().map(|r| r.secrets.clone()).unwrap_or_default();
    all.extend(values);
    *r = Some(Redactor::new(all));
}

/// `text` with every registered secret, in any encoding, replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    match REGISTRY.read().unwrap().as_ref() {
        Some(r) => Cow::Owned(r.redact(text).into_owned()),
        None => Cow::Borrowed(text),
    }
}

/// Replaces a set of secrets, in every encoding they can take, by `***`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// The raw values, longest first, deduplicated, none empty.
    secrets: Vec<String>,
    /// One alternation over every secret's pattern; `None` without secrets.
    re: Option<Regex>,
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        // Longest first: at one position the regex takes the first alternative that
        // matches, so no suffix of a longer secret is left behind.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        if secrets.is_empty() {
            return Redactor::default();
        }
        let mut alternatives: Vec<String> = secrets.iter().map(|s| encodings(s)).collect();
        for s in &secrets {
            alternatives.extend(base64_cores(s.as_bytes()).iter().map(|c| regex::escape(c)));
        }
        let re = Regex::new(&alternatives.join("|")).expect("secret patterns are valid regexes");
        Redactor {
            secrets,
            re: Some(re),
        }
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret, in any encoding, replaced by `***`.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.re {
            Some(re) => re.replace_all(text, MASK),
            None => Cow::Borrowed(text),
        }
    }
}

/// A regex matching `secret` with each character raw or encoded.
fn encodings(secret: &str) -> String {
    let mut p = String::new();
    for c in secret.chars() {
        if c.is_ascii_alphanumeric() {
            // No encoder here touches letters and digits.
            p.push(c);
        } else {
            p.push_str(&char_forms(c));
        }
    }
    p
}

/// Every form one character that is not a letter or digit can take: raw, after
/// backslashes (JSON, Rust `Debug`, a shell), percent-encoded (also twice), `+` for
/// a space, a JSON `\uXXXX` escape, an HTML entity (also escaped twice).
fn char_forms(c: char) -> String {
    let mut utf8 = [0u8; 4];
    let bytes = c.encode_utf8(&mut utf8).as_bytes();
    let mut percent = String::new();
    for b in bytes {
        let _ = write!(percent, "%(?:25)?(?i:{b:02x})");
    }
    let code = c as u32;
    let named = match c {
        '<' => "|lt",
        '>' => "|gt",
        '&' => "|amp",
        '"' => "|quot",
        '\'' => "|apos",
        _ => "",
    };
    let entity = format!("(?:&|&amp;)(?:#(?i:x0*{code:x})|#0*{code}{named});");
    let mut forms = format!(
        r"\\*(?:{}|{percent}|{entity})",
        regex::escape(&c.to_string())
    );
    if code <= 0xFFFF {
        let _ = write!(forms, r"|\\+u(?i:{code:04x})");
    }
    match c {
        ' ' => forms.push_str(r"|\+"),
        '\n' => forms.push_str(r"|\\+n"),
        '\r' => forms.push_str(r"|\\+r"),
        '\t' => forms.push_str(r"|\\+t"),
        _ => {}
    }
    format!("(?:{forms})")
}

/// The parts of base64(secret) that do not depend on the bytes around it, for each
/// of the three alignments the secret can have inside a longer encoded value (as in
/// `Basic base64(user:secret)`), standard and URL-safe alphabets. Parts shorter than
/// 8 characters are left out: they would match ordinary text.
fn base64_cores(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..3usize {
        let mut buf = vec![0u8; k];
        buf.extend_from_slice(secret);
        let b = base64(&buf);
        let from = (8 * k).div_ceil(6);
        let to = 8 * (k + secret.len()) / 6;
        if to >= from + 8 {
            let core = &b[from..to];
            out.push(core.to_string());
            out.push(core.replace('+', "-").replace('/', "_"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Standard base64 (RFC 4648) with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "s3cr3t canary<123>";

    fn r() -> Redactor {
        Redactor::new([S.to_string()])
    }

    #[test]
    fn longest_secret_first() {
        let r = Redactor::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(r.redact("key=abcdef;k2=abc"), "key=***;k2=***");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        for (name, text) in [
            ("raw", "x s3cr3t canary<123> y".to_string()),
            ("percent %20", "url?k=s3cr3t%20canary%3C123%3E&z".into()),
            ("percent lower", "url?k=s3cr3t%20canary%3c123%3e&z".into()),
            ("percent +", "k=s3cr3t+canary%3C123%3E&z".into()),
            ("percent twice", "k=s3cr3t%2520canary%253C123%253E".into()),
            ("html named", "<td>s3cr3t canary&lt;123&gt;</td>".into()),
            ("html hex", "<td>s3cr3t canary&#x3C;123&#x3E;</td>".into()),
            ("html dec", "<td>s3cr3t canary&#60;123&#62;</td>".into()),
            ("html twice", "s3cr3t canary&amp;lt;123&amp;gt;".into()),
            ("json \\u", r#"{"m":"s3cr3t canary\u003c123\u003e"}"#.into()),
            ("shell escaped", r"s3cr3t\ canary\<123\>".into()),
            (
                "basic auth",
                format!(
                    "Authorization: Basic {}",
                    base64(format!("user:{S}").as_bytes())
                ),
            ),
            ("base64", base64(S.as_bytes())),
        ] {
            let out = r().redact(&text).into_owned();
            assert!(
                !out.contains("canary") && out.contains(MASK),
                "{name}: {text} -> {out}"
            );
            for core in base64_cores(S.as_bytes()) {
                assert!(!out.contains(&core), "{name}: {out}");
            }
        }
    }

    #[test]
    fn quotes_and_backslashes_through_json_and_debug() {
        let secret = r#"p"w\d"#;
        let r = Redactor::new([secret.to_string()]);
        let json = serde_json::to_string(&format!("got {secret}!")).unwrap();
        assert_eq!(r.redact(&json), r#""got ***!""#);
        // A Debug-formatted string inside a JSON log line: escaped twice.
        let twice = serde_json::to_string(&format!("{:?}", secret)).unwrap();
        assert_eq!(r.redact(&twice), r#""\"***\"""#);
        let ctl = Redactor::new(["a\nb\tc".to_string()]);
        assert_eq!(ctl.redact(r#"x "a\nb\tc" y"#), r#"x "***" y"#);
    }

    #[test]
    fn other_text_is_left_alone() {
        let text = "s3cr3t canary 123 and a+b%20c &lt; \\u003c";
        assert_eq!(r().redact(text), text);
        assert!(Redactor::new(Vec::<String>::new()).is_empty());
        assert_eq!(Redactor::default().redact("x"), "x");
    }

    #[test]
    fn base64_is_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn the_registry_redacts_what_was_registered() {
        register(["registry-only-secret-value".to_string()]);
        assert_eq!(
            redact("x registry-only-secret-value y"),
            format!("x {MASK} y")
        );
    }
}
