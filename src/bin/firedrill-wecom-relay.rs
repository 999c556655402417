//! `firedrill-wecom-relay`: the system under test of the WeCom drills. A business
//! system hands it messages (`POST /send {"id": "…", "content": "…"}`); it answers
//! `202` once the message is safe (written to its spool) and delivers it through
//! its channels in priority order: the WeCom API (primary), a private deployment
//! (standby), a group-robot webhook (gateway).
//!
//! Per channel: the access token is fetched and refreshed on 40014/42001; 45009 and
//! -1 back off (exponentially) and retry; a definite failure (connection refused,
//! 60020, any other errcode) moves on to the next channel; a channel that failed is
//! skipped for `--breaker-ms`. When every channel fails the message stays in the
//! file-backed spool and the worker retries it until a channel returns (the spool is
//! drained in order, and replayed after a restart).
//!
//! **The documented weakness**: a send that times out is in doubt (the API may have
//! accepted it), yet by default the relay retries it and then fails over, without
//! WeCom's duplicate check: when a slow or frozen primary did accept the message,
//! it is delivered twice. `--safe-failover` fixes it: every send carries
//! `enable_duplicate_check`, and a message in doubt on a channel is only ever
//! retried on that channel (never sent to another), so WeCom drops the copies.
//! The price: those messages wait for that channel to come back.
//!
//! `--no-spool` runs without the spool: messages are still acknowledged, kept in
//! memory only, and dropped when every channel fails (the loss a drill must catch).
//!
//! `/health` and `/stats` report what happened. Secrets come from the environment:
//! `WECOM_CORPID`, `WECOM_CORPSECRET`, `WECOM_WEBHOOK_KEY`.

// The relay reads no query strings.
#[allow(dead_code)]
#[path = "wecom/http.rs"]
mod http;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, opt, opts, unix_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

fn usage() -> ExitCode {
    eprintln!(
        "usage: firedrill-wecom-relay --port PORT --channel NAME=app:URL|webhook:URL [--channel ...] \
         (--spool FILE | --no-spool) [--safe-failover] [--timeout-ms 500] [--attempts 2] \
         [--backoff-ms 100] [--breaker-ms 2000] [--agentid N] [--pidfile FILE]\n  \
         env: WECOM_CORPID, WECOM_CORPSECRET, WECOM_WEBHOOK_KEY"
    );
    ExitCode::from(2)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// `gettoken` + `message/send`.
    App,
    /// Group robot `webhook/send?key=`.
    Webhook,
}

struct Channel {
    name: String,
    kind: Kind,
    base: String,
    token: tokio::sync::Mutex<Option<String>>,
    /// Skipped until then after a failure.
    open_until: Mutex<Option<Instant>>,
}

/// One message to deliver.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Msg {
    id: String,
    #[serde(default = "text")]
    msgtype: String,
    content: String,
    #[serde(default = "all")]
    touser: String,
    /// `--safe-failover`: the channel on which a send of it is in doubt.
    #[serde(default)]
    pinned: Option<usize>,
}

fn text() -> String {
    "text".into()
}
fn all() -> String {
    "@all".into()
}

struct Config {
    channels: Vec<Channel>,
    spool: Option<PathBuf>,
    safe: bool,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    breaker: Duration,
    agentid: i64,
    corpid: String,
    secret: String,
    webhook_key: String,
}

#[derive(Default, Serialize)]
struct Stats {
    received: u64,
    delivered: u64,
    dropped: u64,
    retries: u64,
    failovers: u64,
    in_doubt: u64,
    token_refreshes: u64,
    backoffs: u64,
    spool_retries: u64,
    via: BTreeMap<String, u64>,
    last_error: Option<String>,
    last_channel: Option<String>,
}

struct Shared {
    queue: VecDeque<Msg>,
    spool: Option<std::fs::File>,
    stats: Stats,
}

struct Relay {
    cfg: Config,
    shared: Mutex<Shared>,
    wake: Notify,
    http: reqwest::Client,
}

/// What one send to one channel came to.
enum Outcome {
    Delivered,
    /// 40014/42001: fetch a new token and retry.
    Token,
    /// 45009/-1: back off and retry.
    Backoff(String),
    /// Nothing was delivered (refused connection, 60020, another errcode).
    Definite(String),
    /// Timed out or cut mid-answer: the API may have accepted it.
    InDoubt(String),
}

impl Relay {
    fn spool_write(&self, sh: &mut Shared, line: &Value, sync: bool) -> std::io::Result<()> {
        if let Some(f) = sh.spool.as_mut() {
            let mut l = line.to_string();
            l.push('\n');
            f.write_all(l.as_bytes())?;
            if sync {
                f.sync_data()?;
            }
        }
        Ok(())
    }

    async fn handle(self: Arc<Self>, req: Request) -> Option<Response> {
        Some(match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/send") => {
                let v = req.json();
                let Some(id) = v["id"].as_str().filter(|s| !s.is_empty()) else {
                    return Some(Response::json(
                        400,
                        json!({ "errcode": 400, "errmsg": "expected a JSON body with a non-empty \"id\"" }),
                    ));
                };
                let msg = Msg {
                    id: id.to_string(),
                    msgtype: v["msgtype"].as_str().unwrap_or("text").to_string(),
                    content: v["content"].as_str().unwrap_or(id).to_string(),
                    touser: v["touser"].as_str().unwrap_or("@all").to_string(),
                    pinned: None,
                };
                if !matches!(msg.msgtype.as_str(), "text" | "markdown") {
                    return Some(Response::json(
                        400,
                        json!({ "errcode": 400, "errmsg": "msgtype: expected text or markdown" }),
                    ));
                }
                let mut sh = self.shared.lock().unwrap();
                // Write-ahead: acknowledged means on disk (with a spool).
                let line = json!({ "op": "put", "msg": msg });
                if let Err(e) = self.spool_write(&mut sh, &line, true) {
                    return Some(Response::json(
                        503,
                        json!({ "errcode": 503, "errmsg": format!("spool write failed: {e}") }),
                    ));
                }
                sh.stats.received += 1;
                sh.queue.push_back(msg);
                drop(sh);
                self.wake.notify_one();
                Response::json(202, json!({ "errcode": 0, "errmsg": "accepted", "id": id }))
            }
            ("GET", "/health") => {
                let sh = self.shared.lock().unwrap();
                Response::json(
                    200,
                    json!({ "status": "ok", "pending": sh.queue.len(), "spool": self.cfg.spool.is_some(), "safe_failover": self.cfg.safe }),
                )
            }
            ("GET", "/stats") => {
                let sh = self.shared.lock().unwrap();
                let mut v = serde_json::to_value(&sh.stats).unwrap_or_default();
                v["pending"] = json!(sh.queue.len());
                v["channels"] = json!(
                    self.cfg
                        .channels
                        .iter()
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>()
                );
                Response::json(200, v)
            }
            _ => Response::json(404, json!({ "errcode": 404, "errmsg": "not found" })),
        })
    }

    /// Delivers the queue head by head, forever.
    async fn worker(self: Arc<Self>) {
        loop {
            let head = self.shared.lock().unwrap().queue.front().cloned();
            let Some(mut msg) = head else {
                self.wake.notified().await;
                continue;
            };
            let delivered = self.deliver(&mut msg).await;
            if let Some(pause) = self.settle(delivered, &msg) {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Books the outcome of one delivery; `Some(pause)`: every channel failed, the
    /// message stays in the spool and the worker pauses before going on.
    fn settle(&self, delivered: Option<usize>, msg: &Msg) -> Option<Duration> {
        let mut sh = self.shared.lock().unwrap();
        {
            match delivered {
                Some(ch) => {
                    sh.queue.pop_front();
                    sh.stats.delivered += 1;
                    *sh.stats
                        .via
                        .entry(self.cfg.channels[ch].name.clone())
                        .or_default() += 1;
                    sh.stats.last_channel = Some(self.cfg.channels[ch].name.clone());
                    let _ =
                        self.spool_write(&mut sh, &json!({ "op": "done", "id": msg.id }), false);
                    if sh.queue.is_empty()
                        && let Some(f) = sh.spool.as_mut()
                    {
                        // Everything acknowledged is delivered: start the spool afresh.
                        let _ = f.set_len(0);
                    }
                }
                None if self.cfg.spool.is_none() => {
                    // The weakness of `--no-spool`: acknowledged, then dropped.
                    sh.queue.pop_front();
                    sh.stats.dropped += 1;
                    eprintln!("relay: dropped {} (every channel failed, no spool)", msg.id);
                }
                None => {
                    sh.stats.spool_retries += 1;
                    if msg.pinned.is_some() && sh.queue.len() > 1 {
                        // In doubt on a channel that is down: it waits for that
                        // channel at the back, the others go on (order is lost).
                        sh.queue.pop_front();
                        sh.queue.push_back(msg.clone());
                        return Some(Duration::from_millis(10));
                    }
                    // Stays at the head of the spool; retried after a pause.
                    if let Some(h) = sh.queue.front_mut() {
                        h.pinned = msg.pinned;
                    }
                    return Some(self.cfg.backoff.max(Duration::from_millis(100)));
                }
            }
        }
        None
    }

    /// Tries the channels in priority order; returns the one that delivered.
    async fn deliver(&self, msg: &mut Msg) -> Option<usize> {
        let now = Instant::now();
        let all_open = self
            .cfg
            .channels
            .iter()
            .all(|c| c.open_until.lock().unwrap().is_some_and(|t| t > now));
        let mut tried_one = false;
        for (ci, ch) in self.cfg.channels.iter().enumerate() {
            if let Some(p) = msg.pinned
                && p != ci
            {
                continue; // in doubt elsewhere: only that channel may get it
            }
            let skip = ch.open_until.lock().unwrap().is_some_and(|t| t > now);
            if skip && msg.pinned == Some(ci) {
                return None; // its channel is still down: wait for it
            }
            // A channel that failed lately is skipped, unless all did (then each is tried).
            if skip && !all_open && msg.pinned.is_none() {
                continue;
            }
            if tried_one {
                self.shared.lock().unwrap().stats.failovers += 1;
            }
            tried_one = true;
            let mut attempt = 0;
            let mut token_tries = 0;
            while attempt < self.cfg.attempts {
                match self.send(ch, msg).await {
                    Outcome::Delivered => {
                        *ch.open_until.lock().unwrap() = None;
                        return Some(ci);
                    }
                    Outcome::Token if token_tries < 2 => {
                        token_tries += 1;
                        *ch.token.lock().await = None;
                        continue; // a new token is not a new attempt
                    }
                    Outcome::Token => {
                        self.note_error(format!("{}: token refused after refresh", ch.name));
                        break;
                    }
                    Outcome::Backoff(e) => {
                        self.note_error(format!("{}: {e}", ch.name));
                        self.shared.lock().unwrap().stats.backoffs += 1;
                        tokio::time::sleep(self.cfg.backoff * 2u32.pow(attempt.min(6))).await;
                    }
                    Outcome::Definite(e) => {
                        self.note_error(format!("{}: {e}", ch.name));
                        break;
                    }
                    Outcome::InDoubt(e) => {
                        self.note_error(format!("{}: {e}", ch.name));
                        self.shared.lock().unwrap().stats.in_doubt += 1;
                        if self.cfg.safe {
                            msg.pinned = Some(ci);
                        }
                    }
                }
                attempt += 1;
                if attempt < self.cfg.attempts {
                    self.shared.lock().unwrap().stats.retries += 1;
                }
            }
            *ch.open_until.lock().unwrap() = Some(Instant::now() + self.cfg.breaker);
            if msg.pinned == Some(ci) {
                return None; // safe failover: never re-sent through another channel
            }
        }
        None
    }

    fn note_error(&self, e: String) {
        self.shared.lock().unwrap().stats.last_error = Some(e);
    }

    async fn token(&self, ch: &Channel) -> Result<String, Outcome> {
        let mut t = ch.token.lock().await;
        if let Some(tok) = t.as_ref() {
            return Ok(tok.clone());
        }
        self.shared.lock().unwrap().stats.token_refreshes += 1;
        let url = format!("{}/cgi-bin/gettoken", ch.base);
        let r = self
            .http
            .get(format!(
                "{url}?corpid={}&corpsecret={}",
                enc(&self.cfg.corpid),
                enc(&self.cfg.secret)
            ))
            .timeout(self.cfg.timeout)
            .send()
            .await;
        // gettoken changes nothing: a timeout there is a definite failure.
        let v: Value = match r {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => return Err(Outcome::Definite(format!("gettoken: {}", short(&e)))),
        };
        match (v["errcode"].as_i64(), v["access_token"].as_str()) {
            (Some(0), Some(tok)) => {
                *t = Some(tok.to_string());
                Ok(tok.to_string())
            }
            (Some(c @ (45009 | -1)), _) => Err(Outcome::Backoff(format!("gettoken errcode {c}"))),
            (c, _) => Err(Outcome::Definite(format!(
                "gettoken errcode {}",
                c.unwrap_or(-999)
            ))),
        }
    }

    async fn send(&self, ch: &Channel, msg: &Msg) -> Outcome {
        let mut body =
            json!({ "msgtype": msg.msgtype, msg.msgtype.clone(): { "content": msg.content } });
        let req = match ch.kind {
            Kind::App => {
                let tok = match self.token(ch).await {
                    Ok(t) => t,
                    Err(o) => return o,
                };
                body["touser"] = json!(msg.touser);
                body["agentid"] = json!(self.cfg.agentid);
                if self.cfg.safe {
                    body["enable_duplicate_check"] = json!(1);
                    body["duplicate_check_interval"] = json!(1800);
                }
                self.http.post(format!(
                    "{}/cgi-bin/message/send?access_token={}",
                    ch.base,
                    enc(&tok)
                ))
            }
            Kind::Webhook => self.http.post(format!(
                "{}/cgi-bin/webhook/send?key={}",
                ch.base,
                enc(&self.cfg.webhook_key)
            )),
        };
        let r = req.json(&body).timeout(self.cfg.timeout).send().await;
        let r = match r {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Outcome::Definite(short(&e)),
            Err(e) => return Outcome::InDoubt(short(&e)),
        };
        let status = r.status().as_u16();
        let v: Value = match r.json().await {
            Ok(v) => v,
            Err(e) => return Outcome::InDoubt(format!("HTTP {status}: {}", short(&e))),
        };
        match v["errcode"].as_i64() {
            Some(0) => Outcome::Delivered,
            Some(40014 | 42001) => Outcome::Token,
            Some(c @ (45009 | -1)) => Outcome::Backoff(format!("errcode {c}")),
            Some(c) => Outcome::Definite(format!("errcode {c}")),
            None => Outcome::Definite(format!("HTTP {status} without errcode")),
        }
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(x) = src {
            s = format!("{s}: {x}");
            src = x.source();
        }
        s
    }
}

/// The messages a spool still holds: every `put` without its `done`.
fn replay(path: &PathBuf) -> Vec<Msg> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut pending: Vec<Msg> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue; // a torn last line: never acknowledged
        };
        match v["op"].as_str() {
            Some("put") => {
                if let Ok(m) = serde_json::from_value::<Msg>(v["msg"].clone()) {
                    pending.push(m);
                }
            }
            Some("done") => {
                if let Some(id) = v["id"].as_str()
                    && let Some(i) = pending.iter().position(|m| m.id == id)
                {
                    pending.remove(i);
                }
            }
            _ => {}
        }
    }
    pending
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(port) = opt(&args, "--port").and_then(|p| p.parse::<u16>().ok()) else {
        return usage();
    };
    let num = |n: &str, d: u64| opt(&args, n).and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut channels = Vec::new();
    for c in opts(&args, "--channel") {
        let parsed = c.split_once('=').and_then(|(name, rest)| {
            let (kind, url) = rest.split_once(':')?;
            let kind = match kind {
                "app" => Kind::App,
                "webhook" => Kind::Webhook,
                _ => return None,
            };
            Some(Channel {
                name: name.to_string(),
                kind,
                base: url.trim_end_matches('/').to_string(),
                token: tokio::sync::Mutex::new(None),
                open_until: Mutex::new(None),
            })
        });
        match parsed {
            Some(ch) => channels.push(ch),
            None => {
                eprintln!("--channel {c}: expected NAME=app:URL or NAME=webhook:URL");
                return usage();
            }
        }
    }
    let no_spool = args.iter().any(|a| a == "--no-spool");
    let spool = opt(&args, "--spool").map(PathBuf::from);
    if channels.is_empty() || no_spool == spool.is_some() {
        return usage();
    }
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let cfg = Config {
        channels,
        safe: args.iter().any(|a| a == "--safe-failover"),
        timeout: Duration::from_millis(num("--timeout-ms", 500)),
        attempts: num("--attempts", 2).max(1) as u32,
        backoff: Duration::from_millis(num("--backoff-ms", 100)),
        breaker: Duration::from_millis(num("--breaker-ms", 2000)),
        agentid: num("--agentid", 1000002) as i64,
        corpid: env("WECOM_CORPID", "ww-firedrill"),
        secret: env("WECOM_CORPSECRET", "sim-secret"),
        webhook_key: env("WECOM_WEBHOOK_KEY", "sim-key"),
        spool,
    };
    let mut queue = VecDeque::new();
    let mut file = None;
    if let Some(p) = &cfg.spool {
        queue.extend(replay(p));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p);
        match f {
            Ok(f) => file = Some(f),
            Err(e) => {
                eprintln!(
                    "firedrill-wecom-relay: cannot open the spool {}: {e}",
                    p.display()
                );
                return ExitCode::from(1);
            }
        }
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .expect("HTTP client");
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
                eprintln!("firedrill-wecom-relay: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::from(1);
            }
        };
        let replayed = queue.len();
        let relay = Arc::new(Relay {
            cfg,
            shared: Mutex::new(Shared {
                queue,
                spool: file,
                stats: Stats::default(),
            }),
            wake: Notify::new(),
            http,
        });
        if let Some(p) = &pidfile {
            let _ = std::fs::write(p, format!("{}\n", std::process::id()));
        }
        eprintln!(
            "firedrill-wecom-relay listening on 127.0.0.1:{port} ({} channel(s), spool {}, safe failover {}, {replayed} message(s) replayed) at {:.0}",
            relay.cfg.channels.len(),
            relay.cfg.spool.as_ref().map_or("off".into(), |p| p.display().to_string()),
            if relay.cfg.safe { "on" } else { "off" },
            unix_ms()
        );
        tokio::spawn(relay.clone().worker());
        let r = relay.clone();
        let handler: http::Handler = Arc::new(move |req| Box::pin(r.clone().handle(req)));
        http::serve_until_signal(listener, handler, pidfile.as_deref()).await;
        ExitCode::SUCCESS
    })
}
