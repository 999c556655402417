//! `http_fault` through the chaos proxy, explicit mode: the WeCom rate limit
//! answers 45009 beyond its token bucket, 42001 makes a token-refreshing client
//! (written here, against a wiremock WeCom API) refresh and recover, and the other
//! actions (429 + Retry-After, fixed response, reset) do what they say. After every
//! revert the proxy's port is closed and the counters match what clients saw.

use crate::proxy_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proxy_support::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client() -> reqwest::Client {
    firedrill::install_crypto_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_rate_limit_answers_45009_beyond_its_bucket() {
    let up = Upstream::start().await;
    let (proxy, inj) = inject_local_proxy(
        "http_fault",
        up.addr,
        json!({ "rules": [ { "match": { "method": "POST", "path": "/cgi-bin/message/send" },
                             "action": { "wecom_rate_limit": { "requests": 5, "per": "1s" } } } ] }),
    ).await;
    assert!(inj.effect.as_declared, "{:?}", inj.effect);

    // 20 req/s for 10 s, scheduled by the clock (open model).
    let http = client();
    let url = format!("http://{proxy}/cgi-bin/message/send?access_token=x");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let due = start + Duration::from_millis(50 * i as u64);
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let r = http.post(&url).body("{}").send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["errcode"].as_i64().unwrap()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let limited = codes.iter().filter(|c| **c == 45009).count();
    let passed = codes.iter().filter(|c| **c == 0).count();
    assert_eq!(limited + passed, 200);
    // The bucket starts full (5) and refills 5/s over the ~10 s of sending.
    let allowed = 5.0 + 5.0 * elapsed;
    let expected_share = (200.0 - allowed) / 200.0;
    let share = limited as f64 / 200.0;
    assert!(
        (share - expected_share).abs() <= 0.10 * expected_share,
        "45009 share {share:.3}, bucket predicts {expected_share:.3}"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst) as usize, passed);

    let r = inj.revert().await;
    let http_stats = &r.details["stats"]["http"];
    assert_eq!(http_stats["requests"], 200);
    assert_eq!(http_stats["rules"][0]["applied"], limited as u64);
    assert!(
        r.measured.contains(&format!("{limited} hit")),
        "{}",
        r.measured
    );
    assert_closed(proxy);
}

/// A WeCom client as real integrations write it: caches the access_token, and on
/// 42001/40014 fetches a new one and retries.
struct WecomClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    refreshes: u32,
}

impl WecomClient {
    async fn refresh(&mut self) {
        let v: Value = self
            .http
            .get(format!(
                "{}/cgi-bin/gettoken?corpid=c&corpsecret=s",
                self.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.token = Some(v["access_token"].as_str().unwrap().to_string());
        self.refreshes += 1;
    }

    /// Sends one message; returns the errcodes seen until it went through.
    async fn send(&mut self, text: &str) -> Vec<i64> {
        let mut seen = Vec::new();
        for _ in 0..30 {
            if self.token.is_none() {
                self.refresh().await;
            }
            let url = format!(
                "{}/cgi-bin/message/send?access_token={}",
                self.base,
                self.token.as_deref().unwrap()
            );
            let v: Value = self
                .http
                .post(url)
                .json(&json!({ "msgtype": "text", "text": { "content": text } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let code = v["errcode"].as_i64().unwrap();
            seen.push(code);
            match code {
                0 => return seen,
                42001 | 40014 => self.token = None,
                other => panic!("unexpected errcode {other}"),
            }
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_token_expired_makes_the_client_refresh_and_recover() {
    let wecom = MockServer::start().await;
    let issued = Arc::new(AtomicU64::new(0));
    let i2 = issued.clone();
    Mock::given(method("GET"))
        .and(path("/cgi-bin/gettoken"))
        .respond_with(move |_: &wiremock::Request| {
            let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 0, "errmsg": "ok", "access_token": format!("tok{n}"), "expires_in": 7200 }))
        })
        .mount(&wecom)
        .await;
    Mock::given(method("POST"))
        .and(path("/cgi-bin/message/send"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "errcode": 0, "errmsg": "ok", "msgid": "m" })),
        )
        .mount(&wecom)
        .await;
    let (proxy, inj) = inject_local_proxy(
        "http_fault",
        *wecom.address(),
        json!({ "rules": [ { "match": { "path": "/cgi-bin/message/*" },
                             "action": "wecom_token_expired", "percentage": 50 } ] }),
    )
    .await;
    assert!(inj.effect.as_declared, "{:?}", inj.effect);
    let mut c = WecomClient {
        http: client(),
        base: format!("http://{proxy}"),
        token: None,
        refreshes: 0,
    };
    let mut expired = 0;
    for i in 0..20 {
        let seen = c.send(&format!("drill {i}")).await;
        assert_eq!(
            seen.last(),
            Some(&0),
            "message {i} never went through: {seen:?}"
        );
        expired += seen.iter().filter(|c| **c == 42001).count() as u64;
    }
    // Every 42001 cost exactly one refresh; the first token was fetched once.
    assert!(expired > 0, "the fault never fired");
    assert_eq!(c.refreshes as u64, expired + 1);
    assert_eq!(issued.load(Ordering::SeqCst), expired + 1);
    let sends = wecom
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/cgi-bin/message/send")
        .count();
    assert_eq!(sends, 20, "the upstream saw exactly the successful sends");
    let r = inj.revert().await;
    assert_eq!(r.details["stats"]["http"]["rules"][0]["applied"], expired);
    assert_closed(proxy);

    // After the revert, the client talks to WeCom directly and needs no refresh.
    c.base = wecom.uri();
    let before = c.refreshes;
    assert_eq!(c.send("after").await, vec![0]);
    assert_eq!(c.refreshes, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canned_answers_resets_and_untouched_paths() {
    let up = Upstream::start().await;
    let (proxy, inj) = inject_local_proxy(
        "http_fault",
        up.addr,
        json!({ "rules": [
                    { "match": { "path": "/busy" }, "action": "wecom_busy" },
                    { "match": { "path": "/slow-down" }, "action": { "http_429": { "retry_after": "3s" } } },
                    { "match": { "method": "GET", "path": "/fixed*" },
                      "action": { "respond": { "status": 503, "headers": { "x-drill": "yes" }, "body": "down" } } },
                    { "match": { "path": "/reset" }, "action": "abort" },
                    { "match": { "path": "/never" }, "action": "wecom_busy", "probability": 0 }
                ] }),
    ).await;
    let http = client();
    let base = format!("http://{proxy}");

    let r = http.get(format!("{base}/busy")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], -1);

    let r = http.get(format!("{base}/slow-down")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");

    let r = http.get(format!("{base}/fixed/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-drill"], "yes");
    assert_eq!(r.text().await.unwrap(), "down");

    // A POST does not match the GET-only rule: forwarded.
    let r = http
        .post(format!("{base}/fixed/x"))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], 0);

    // Reset: the client sees the connection reset, not an answer.
    let mut raw = Client::connect(proxy).await;
    let e = raw
        .get("/reset")
        .await
        .err()
        .expect("no answer after a reset");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");

    // Probability 0 and unmatched paths reach the upstream.
    let mut raw = Client::connect(proxy).await;
    for p in ["/never", "/other", "/never"] {
        let a = raw.get(p).await.unwrap();
        assert!(a.body.contains("\"errcode\":0"), "{p}: {}", a.body);
    }
    let r = inj.revert().await;
    let rules = &r.details["stats"]["http"]["rules"];
    let applied: Vec<u64> = (0..5)
        .map(|i| rules[i]["applied"].as_u64().unwrap())
        .collect();
    assert_eq!(applied, [1, 1, 1, 1, 0]);
    assert_eq!(rules[4]["matched"], 2);
    assert_eq!(r.details["stats"]["http"]["aborted"], 1);
    assert_closed(proxy);
}
