//! `firedrill-wecom-sim`: a WeCom (企业微信) API simulator for drills. Never the real
//! API. Run one instance as the public API and another as the private deployment.
//!
//! WeCom endpoints, with WeCom's JSON shapes and errcodes:
//! - `GET /cgi-bin/gettoken?corpid=…&corpsecret=…` → `access_token`, `expires_in`
//!   (40001 on a wrong secret);
//! - `POST /cgi-bin/message/send?access_token=…` (`text`, `markdown`; WeCom's
//!   `enable_duplicate_check` / `duplicate_check_interval` are honoured);
//! - `POST /cgi-bin/webhook/send?key=…` (group robot; 93000 on a wrong key).
//!
//! Errcodes: 40014 invalid token, 42001 expired token, 45009 frequency limit
//! (`--quota N` `message/send` calls per `--quota-window-ms`), -1 system busy, 60020 caller IP not
//! allowed (the last two and others through the admin mode).
//!
//! Admin (loopback, for drills and tests): `GET /admin/messages` (every accepted
//! message: `seq`, `msgid`, `content`, `received_ms` since the Unix epoch),
//! `GET /admin/stats`, `POST /admin/mode {"mode": "ok|busy|quota|ip_denied|slow|
//! blackhole|reset", "delay_ms": N}`, `POST /admin/expire_tokens`, `POST /admin/clear`,
//! `GET /health`.
//!
//! Tokens are stateless (issue time, nonce and a MAC keyed by the corp secret), so a
//! private deployment sharing the corp secret accepts the public API's tokens, and a
//! restart does not invalidate them. Secrets come from the environment, never the
//! command line:
//! `WECOM_SIM_CORPSECRET` (default `sim-secret`), `WECOM_SIM_WEBHOOK_KEY` (default
//! `sim-key`).

#[path = "wecom/http.rs"]
mod http;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, opt, unix_ms};
use serde_json::{Value, json};

fn usage() -> ExitCode {
    eprintln!(
        "usage: firedrill-wecom-sim --port PORT [--name NAME] [--pidfile FILE] [--token-ttl-s SECS] [--quota N] [--quota-window-ms MS] [--mode MODE] [--delay-ms MS]\n  env: WECOM_SIM_CORPSECRET, WECOM_SIM_WEBHOOK_KEY"
    );
    ExitCode::from(2)
}

/// How the simulator answers sends, set with `--mode` or `POST /admin/mode`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Normal service.
    Ok,
    /// errcode -1 (system busy) to every call.
    Busy,
    /// errcode 45009 to every send.
    Quota,
    /// errcode 60020 (caller IP not allowed) to every call.
    IpDenied,
    /// Accept and store the message, but answer only after `delay_ms` (a slow API
    /// whose caller times out although the message went through).
    Slow,
    /// Read the request, never answer, store nothing.
    Blackhole,
    /// Close the connection without answering (after reading the request).
    Reset,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "ok" => Mode::Ok,
            "busy" => Mode::Busy,
            "quota" => Mode::Quota,
            "ip_denied" => Mode::IpDenied,
            "slow" => Mode::Slow,
            "blackhole" => Mode::Blackhole,
            "reset" => Mode::Reset,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Busy => "busy",
            Mode::Quota => "quota",
            Mode::IpDenied => "ip_denied",
            Mode::Slow => "slow",
            Mode::Blackhole => "blackhole",
            Mode::Reset => "reset",
        }
    }
}

struct Config {
    name: String,
    secret: String,
    webhook_key: String,
    token_ttl: Duration,
    quota: u64,
    quota_window: Duration,
}

struct State {
    mode: Mode,
    delay_ms: u64,
    /// Tokens issued before this (Unix ms) are expired (`/admin/expire_tokens`).
    revoked_before_ms: f64,
    window_start: Instant,
    window_calls: u64,
    messages: Vec<Value>,
    /// Content key → when it was accepted (WeCom's duplicate check).
    dedup: HashMap<String, Instant>,
    counts: BTreeMap<String, u64>,
}

struct Sim {
    cfg: Config,
    state: Mutex<State>,
}

fn err(code: i64, msg: &str) -> Response {
    Response::json(200, json!({ "errcode": code, "errmsg": msg }))
}

impl Sim {
    fn count(&self, what: &str) {
        *self
            .state
            .lock()
            .unwrap()
            .counts
            .entry(what.into())
            .or_default() += 1;
    }

    async fn handle(self: Arc<Self>, req: Request) -> Option<Response> {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") => Some(Response::json(
                200,
                json!({ "status": "ok", "name": self.cfg.name, "mode": self.state.lock().unwrap().mode.name() }),
            )),
            ("GET", "/cgi-bin/gettoken") => Some(self.gettoken(&req)),
            ("POST", "/cgi-bin/message/send") => self.send(&req, false).await,
            ("POST", "/cgi-bin/webhook/send") => self.send(&req, true).await,
            ("GET", "/admin/messages") => {
                let st = self.state.lock().unwrap();
                Some(Response::json(
                    200,
                    json!({ "name": self.cfg.name, "count": st.messages.len(), "messages": st.messages }),
                ))
            }
            ("GET", "/admin/stats") => {
                let st = self.state.lock().unwrap();
                Some(Response::json(
                    200,
                    json!({ "name": self.cfg.name, "mode": st.mode.name(), "accepted": st.messages.len(), "counts": st.counts }),
                ))
            }
            ("POST", "/admin/mode") => {
                let v = req.json();
                let Some(mode) = v["mode"].as_str().and_then(Mode::parse) else {
                    return Some(Response::json(
                        400,
                        json!({ "error": "expected {\"mode\": \"ok|busy|quota|ip_denied|slow|blackhole|reset\"}" }),
                    ));
                };
                let mut st = self.state.lock().unwrap();
                st.mode = mode;
                if let Some(d) = v["delay_ms"].as_u64() {
                    st.delay_ms = d;
                }
                eprintln!("{}: mode {}", self.cfg.name, mode.name());
                Some(Response::json(200, json!({ "mode": mode.name() })))
            }
            ("POST", "/admin/expire_tokens") => {
                let mut st = self.state.lock().unwrap();
                st.revoked_before_ms = unix_ms();
                Some(Response::json(
                    200,
                    json!({ "expired": "every token issued so far" }),
                ))
            }
            ("POST", "/admin/clear") => {
                let mut st = self.state.lock().unwrap();
                st.messages.clear();
                st.dedup.clear();
                Some(Response::json(200, json!({ "cleared": true })))
            }
            _ => Some(Response::json(
                404,
                json!({ "errcode": 404, "errmsg": "not found" }),
            )),
        }
    }

    /// A token any instance with the same corp secret accepts (as a private
    /// deployment sharing the corp's credentials would): issue time, nonce, MAC.
    fn issue(&self, issued_ms: u64, nonce: u64) -> String {
        format!("{issued_ms}.{nonce:016x}.{}", self.mac(issued_ms, nonce))
    }

    fn mac(&self, issued_ms: u64, nonce: u64) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{}\u{0}{issued_ms}\u{0}{nonce}", self.cfg.secret));
        d[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The issue time (Unix ms) of a genuine token.
    fn check(&self, token: &str) -> Option<f64> {
        let mut it = token.split('.');
        let issued: u64 = it.next()?.parse().ok()?;
        let nonce = u64::from_str_radix(it.next()?, 16).ok()?;
        (it.next()? == self.mac(issued, nonce) && it.next().is_none()).then_some(issued as f64)
    }

    fn gettoken(&self, req: &Request) -> Response {
        self.count("gettoken");
        let mode = self.state.lock().unwrap().mode;
        match mode {
            Mode::Busy => return err(-1, "system busy"),
            Mode::IpDenied => return err(60020, "not allow to access from your ip"),
            _ => {}
        }
        if req.query.get("corpsecret") != Some(&self.cfg.secret)
            || req.query.get("corpid").is_none_or(|c| c.is_empty())
        {
            return err(40001, "invalid credential");
        }
        let token = self.issue(unix_ms() as u64, fastrand::u64(..));
        Response::json(
            200,
            json!({ "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.cfg.token_ttl.as_secs() }),
        )
    }

    async fn send(self: &Arc<Self>, req: &Request, webhook: bool) -> Option<Response> {
        self.count(if webhook {
            "webhook_send"
        } else {
            "message_send"
        });
        let (mode, delay) = {
            let st = self.state.lock().unwrap();
            (st.mode, st.delay_ms)
        };
        match mode {
            Mode::Blackhole => {
                // Hold the connection open without answering, for at most a minute.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return None;
            }
            Mode::Reset => return None,
            _ => {}
        }
        let answer = self.accept(req, webhook, mode);
        if mode == Mode::Slow {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Some(answer)
    }

    fn accept(&self, req: &Request, webhook: bool, mode: Mode) -> Response {
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        match mode {
            Mode::Busy => return err(-1, "system busy"),
            Mode::IpDenied => return err(60020, "not allow to access from your ip"),
            Mode::Quota => return err(45009, "api freq out of limit"),
            _ => {}
        }
        if webhook {
            if req.query.get("key") != Some(&self.cfg.webhook_key) {
                return err(93000, "invalid webhook url");
            }
        } else {
            match req.query.get("access_token").and_then(|t| self.check(t)) {
                None => return err(40014, "invalid access_token"),
                Some(issued) if issued < st.revoked_before_ms => {
                    return err(42001, "access_token expired");
                }
                Some(issued) if unix_ms() > issued + self.cfg.token_ttl.as_secs_f64() * 1000.0 => {
                    return err(42001, "access_token expired");
                }
                Some(_) => {}
            }
        }
        // The quota is the app API's; a group robot has limits of its own.
        if !webhook && self.cfg.quota > 0 {
            if now.duration_since(st.window_start) >= self.cfg.quota_window {
                st.window_start = now;
                st.window_calls = 0;
            }
            st.window_calls += 1;
            if st.window_calls > self.cfg.quota {
                return err(45009, "api freq out of limit");
            }
        }
        let v = req.json();
        let msgtype = v["msgtype"].as_str().unwrap_or("");
        let content = match msgtype {
            "text" => v["text"]["content"].as_str(),
            "markdown" => v["markdown"]["content"].as_str(),
            _ => return err(40008, "invalid message type"),
        };
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return err(41009, "missing content");
        };
        if !webhook && v["enable_duplicate_check"].as_i64() == Some(1) {
            let window =
                Duration::from_secs(v["duplicate_check_interval"].as_u64().unwrap_or(1800));
            let key = format!(
                "{msgtype}\u{0}{}\u{0}{content}",
                v["touser"].as_str().unwrap_or("")
            );
            if let Some(at) = st.dedup.get(&key)
                && now.duration_since(*at) < window
            {
                *st.counts.entry("deduplicated".into()).or_default() += 1;
                return Response::json(
                    200,
                    json!({ "errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "dup" }),
                );
            }
            st.dedup.insert(key, now);
        }
        let seq = st.messages.len() as u64 + 1;
        let msgid = format!("{}-{seq}", self.cfg.name);
        st.messages.push(json!({
            "seq": seq,
            "msgid": msgid,
            "api": if webhook { "webhook" } else { "message" },
            "msgtype": msgtype,
            "touser": v["touser"],
            "content": content,
            "received_ms": unix_ms(),
        }));
        if webhook {
            Response::json(200, json!({ "errcode": 0, "errmsg": "ok" }))
        } else {
            Response::json(
                200,
                json!({ "errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": msgid }),
            )
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return usage();
    }
    let Some(port) = opt(&args, "--port").and_then(|p| p.parse::<u16>().ok()) else {
        return usage();
    };
    let num = |n: &str, d: u64| opt(&args, n).and_then(|v| v.parse().ok()).unwrap_or(d);
    let Some(mode) = Mode::parse(&opt(&args, "--mode").unwrap_or("ok".into())) else {
        return usage();
    };
    let cfg = Config {
        name: opt(&args, "--name").unwrap_or_else(|| "wecom".into()),
        secret: std::env::var("WECOM_SIM_CORPSECRET").unwrap_or_else(|_| "sim-secret".into()),
        webhook_key: std::env::var("WECOM_SIM_WEBHOOK_KEY").unwrap_or_else(|_| "sim-key".into()),
        token_ttl: Duration::from_secs(num("--token-ttl-s", 7200)),
        quota: num("--quota", 0),
        quota_window: Duration::from_millis(num("--quota-window-ms", 1000).max(1)),
    };
    let sim = Arc::new(Sim {
        state: Mutex::new(State {
            mode,
            delay_ms: num("--delay-ms", 1000),
            revoked_before_ms: 0.0,
            window_start: Instant::now(),
            window_calls: 0,
            messages: Vec::new(),
            dedup: HashMap::new(),
            counts: BTreeMap::new(),
        }),
        cfg,
    });
    let pidfile = opt(&args, "--pidfile");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("firedrill-wecom-sim: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::from(1);
            }
        };
        if let Some(p) = &pidfile {
            let _ = std::fs::write(p, format!("{}\n", std::process::id()));
        }
        eprintln!(
            "firedrill-wecom-sim {} listening on 127.0.0.1:{port}",
            sim.cfg.name
        );
        let s = sim.clone();
        let handler: http::Handler = Arc::new(move |req| Box::pin(s.clone().handle(req)));
        http::serve_until_signal(listener, handler, pidfile.as_deref()).await;
        ExitCode::SUCCESS
    })
}
