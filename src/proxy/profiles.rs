//! Canned error responses of real APIs, in one table.
//!
//! A vendor's error shape (status, headers, body) is one entry here; `http_fault`
//! rules refer to entries by name (`action: { profile: NAME }`, or the WeCom
//! shortcuts such as `wecom_token_expired`), and the rate-limit actions answer with
//! an entry once their bucket is empty. Adding a vendor = adding a row.

use serde::Serialize;

/// One canned response.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Profile {
    /// Name used in scenarios.
    pub name: &'static str,
    /// Whose error shape this is.
    pub vendor: &'static str,
    /// What the real API means by it, and what a client must do.
    pub meaning: &'static str,
    /// HTTP status (WeCom answers its errors with 200 and an errcode).
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Response body, sent as is.
    pub body: &'static str,
}

/// Every known profile. Keep `name` unique.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "wecom_rate_limit",
        vendor: "WeCom",
        meaning: "API call quota exhausted (errcode 45009); back off and retry later",
        status: 200,
        content_type: "application/json; charset=UTF-8",
        body: r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
    },
    Profile {
        name: "wecom_token_expired",
        vendor: "WeCom",
        meaning: "access_token expired (errcode 42001); fetch a new token and retry",
        status: 200,
        content_type: "application/json; charset=UTF-8",
        body: r#"{"errcode":42001,"errmsg":"access_token expired"}"#,
    },
    Profile {
        name: "wecom_token_invalid",
        vendor: "WeCom",
        meaning: "invalid access_token (errcode 40014); fetch a new token and retry",
        status: 200,
        content_type: "application/json; charset=UTF-8",
        body: r#"{"errcode":40014,"errmsg":"invalid access_token"}"#,
    },
    Profile {
        name: "wecom_busy",
        vendor: "WeCom",
        meaning: "system busy (errcode -1); retry with backoff",
        status: 200,
        content_type: "application/json; charset=UTF-8",
        body: r#"{"errcode":-1,"errmsg":"system busy"}"#,
    },
    Profile {
        name: "http_429",
        vendor: "HTTP",
        meaning: "Too Many Requests; honour Retry-After",
        status: 429,
        content_type: "application/json",
        body: r#"{"error":"too many requests"}"#,
    },
    Profile {
        name: "http_503",
        vendor: "HTTP",
        meaning: "Service Unavailable; fail over or retry later",
        status: 503,
        content_type: "application/json",
        body: r#"{"error":"service unavailable"}"#,
    },
];

/// The profile called `name`.
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// All profile names, for error messages.
pub fn names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A complete HTTP/1.1 response: status line, headers, body.
pub fn render(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_type = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") {
            continue; // always computed
        }
        has_type |= k.eq_ignore_ascii_case("content-type");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_type && !body.is_empty() {
        out.push_str("content-type: text/plain\r\n");
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl Profile {
    /// This profile as a full response, with `extra` headers (e.g. Retry-After).
    pub fn response(&self, extra: &[(String, String)]) -> Vec<u8> {
        let mut headers = vec![("content-type".to_string(), self.content_type.to_string())];
        headers.extend(extra.iter().cloned());
        render(self.status, &headers, self.body.as_bytes())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_bodies_are_json() {
        for (i, p) in PROFILES.iter().enumerate() {
            assert!(PROFILES[..i].iter().all(|q| q.name != p.name), "{}", p.name);
            if p.content_type.starts_with("application/json") {
                serde_json::from_str::<serde_json::Value>(p.body).unwrap();
            }
        }
        let rl: serde_json::Value =
            serde_json::from_str(find("wecom_rate_limit").unwrap().body).unwrap();
        assert_eq!(rl["errcode"], 45009);
    }

    #[test]
    fn rendered_response_is_framed() {
        let r = find("http_429")
            .unwrap()
            .response(&[("retry-after".into(), "2".into())]);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("retry-after: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"too many requests\"}"));
    }
}
