//! `http` probe: one HTTP request with reqwest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Observation, ProbeCtx, truncate_capture};
use crate::duration::HumanDuration;
use crate::target::Target;

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
    /// Send the request from inside this target (a `netns` target, for example): its connections and name lookups are the target's. Defaults to this host.
    #[serde(default)]
    pub target: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(5000)
}

/// What is wrong with a probe's URL, if anything: it must be an absolute http(s)
/// URL whose host is an IP address or an RFC 1123 name (it never reaches a shell,
/// but a host that is neither is a typo or an injection attempt). Shared by the
/// `http` and `traffic` probes.
pub(crate) fn url_problem(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            let host = u.host_str().unwrap_or_default();
            crate::target::host::check_host(host).err().map(|_| {
                format!(
                    "found host `{host}` in the URL, {}",
                    crate::target::host::HOST_EXPECTED
                )
            })
        }
        Ok(u) => Some(format!(
            "found scheme `{}`, expected http or https",
            u.scheme()
        )),
        Err(e) => Some(format!("found `{url}`, expected an absolute URL ({e})")),
    }
}

impl HttpProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(problem) = url_problem(&self.url) {
            errs.push(("url".into(), problem));
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
        match &self.target {
            Some(t) => format!("HTTP {} {} from {t}", self.method.to_uppercase(), self.url),
            None => format!("HTTP {} {}", self.method.to_uppercase(), self.url),
        }
    }

    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let (result, latency) = match self.target.as_deref() {
            // This host: the engine's shared client and its connection pool.
            None => self.send(ctx.http).await,
            Some(name) => {
                let p = self.clone();
                let start = Instant::now();
                let sent = match named_target(ctx, name) {
                    Ok(t) => from_target(t, move |http| async move { p.send(&http).await }).await,
                    Err(e) => Err(e),
                };
                sent.unwrap_or_else(|e| (Err(e), start.elapsed()))
            }
        };
        match result {
            Ok((status, body)) => Observation {
                latency,
                status: Some(status),
                body: Some(truncate_capture(body)),
                ..Default::default()
            },
            Err(error) => Observation {
                latency,
                error: Some(error),
                ..Default::default()
            },
        }
    }

    /// Sends the request with `http`; the answer or the failure, and the round trip.
    async fn send(&self, http: &reqwest::Client) -> (Result<(u16, String), String>, Duration) {
        let method = reqwest::Method::from_bytes(self.method.to_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut req = http.request(method, &self.url).timeout(self.timeout.0);
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
        (
            result.map_err(|e| describe_reqwest_error(&e)),
            start.elapsed(),
        )
    }
}

/// An HTTP client as the engine uses them: no proxy from the environment (a drill
/// measures the path it names), firedrill's user agent.
pub fn client() -> reqwest::Result<reqwest::Client> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("firedrill/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The target a probe names, owned (validation makes an undefined one impossible;
/// a probe built another way fails instead of observing from elsewhere).
pub(crate) fn named_target(ctx: &ProbeCtx<'_>, name: &str) -> Result<Target, String> {
    ctx.targets
        .get(name)
        .cloned()
        .ok_or_else(|| format!("found target `{name}`, expected a defined target"))
}

/// Runs `job` with an HTTP client of its own on a thread in `target`'s network, so
/// that its connections and name lookups are the target's. The engine's shared
/// client cannot serve here: its pooled connections belong to this host.
pub(crate) async fn from_target<T, F, Fut>(target: Target, job: F) -> Result<T, String>
where
    F: FnOnce(reqwest::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    target
        .in_network_async(move || async move {
            match client() {
                Ok(http) => Ok(job(http).await),
                Err(e) => Err(format!("cannot build an HTTP client: {e}")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
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
