//! `http` probe: one HTTP request with reqwest.

use std::collections::BTreeMap;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Observation, ProbeCtx, truncate_capture};
use crate::duration::HumanDuration;

/// An HTTP request.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// HTTP method.
    #[serde(default = "get")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (sent as is).
    #[serde(default)]
    pub body: Option<String>,
    /// Time after which the request counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn get() -> String {
    "GET".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(5000)
}

impl HttpProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                let host = u.host_str().unwrap_or_default();
                if crate::target::host::check_host(host).is_err() {
                    errs.push((
                        "url".into(),
                        format!(
                            "found host `{host}` in the URL, {}",
                            crate::target::host::HOST_EXPECTED
                        ),
                    ));
                }
            }
            Ok(u) => errs.push((
                "url".into(),
                format!("found scheme `{}`, expected http or https", u.scheme()),
            )),
            Err(e) => errs.push((
                "url".into(),
                format!("found `{}`, expected an absolute URL ({e})", self.url),
            )),
        }
        if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            errs.push((
                "method".into(),
                format!(
                    "found `{}`, expected an HTTP method such as GET or POST",
                    self.method
                ),
            ));
        }
        for (k, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                errs.push((
                    format!("headers.{k}"),
                    "found an invalid header name or value".into(),
                ));
            }
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        format!("HTTP {} {}", self.method.to_uppercase(), self.url)
    }

    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let method = reqwest::Method::from_bytes(self.method.to_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut req = ctx.http.request(method, &self.url).timeout(self.timeout.0);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.body {
            req = req.body(b.clone());
        }
        let start = Instant::now();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let latency = start.elapsed();
        match result {
            Ok((status, body)) => Observation {
                latency,
                status: Some(status),
                body: Some(truncate_capture(body)),
                ..Default::default()
            },
            Err(e) => Observation {
                latency,
                error: Some(describe_reqwest_error(&e)),
                ..Default::default()
            },
        }
    }
}

/// reqwest's Display hides the cause ("error sending request"); the cause is what an
/// SRE needs ("connection refused", "timed out").
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(url: &str) -> HttpProbe {
        serde_yaml::from_str(&format!("url: '{url}'")).unwrap()
    }

    #[test]
    fn url_hosts_are_ip_addresses_or_host_names() {
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://[::1]:80/",
            "https://qyapi.weixin.qq.com/cgi-bin",
        ] {
            assert!(probe(ok).validate().is_empty(), "{ok}");
        }
        for bad in ["http://a;b/", "http://a$b/", "http://a_b/"] {
            let e = probe(bad).validate();
            assert!(
                e.iter().any(|(p, m)| p == "url" && m.contains("RFC 1123")),
                "{bad}: {e:?}"
            );
        }
    }
}
