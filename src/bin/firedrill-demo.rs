//! `firedrill-demo`: the system under test that ships with firedrill, so a first
//! drill needs nothing but this repository (no root, no network).
//!
//! `firedrill-demo serve` runs a *supervisor* that keeps one *worker* alive: an HTTP
//! service on 127.0.0.1 answering `/health`, `/stats` and `/api/send` (a WeCom-style
//! `{"errcode":0}`). When the worker dies, the supervisor restarts it after a fixed
//! back-off: a deliberately common weakness (no standby, requests fail during the
//! restart) that the quickstart drill exposes. A worker that cannot listen (the port
//! is taken) stops the whole demo with a non-zero exit and says why.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  firedrill-demo serve --port PORT --pidfile FILE [--supervisor-pidfile FILE] [--restart-delay-ms MS]\n  firedrill-demo worker --port PORT"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(port) = opt("--port").and_then(|p| p.parse::<u16>().ok()) else {
        return usage();
    };
    match args.first().map(String::as_str) {
        Some("worker") => worker(port),
        Some("serve") => {
            let Some(pidfile) = opt("--pidfile").map(PathBuf::from) else {
                return usage();
            };
            let delay = opt("--restart-delay-ms")
                .and_then(|d| d.parse().ok())
                .unwrap_or(2000);
            let sup_pidfile = opt("--supervisor-pidfile").map(PathBuf::from);
            supervise(
                port,
                &pidfile,
                sup_pidfile.as_deref(),
                Duration::from_millis(delay),
            )
        }
        _ => usage(),
    }
}

/// Keeps one worker alive until SIGTERM/SIGINT, then stops it and exits.
fn supervise(
    port: u16,
    pidfile: &std::path::Path,
    sup_pidfile: Option<&std::path::Path>,
    delay: Duration,
) -> ExitCode {
    let handler: extern "C" fn(i32) = on_signal;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
    let stop = &STOP;
    if let Some(p) = sup_pidfile {
        let _ = std::fs::write(p, format!("{}\n", std::process::id()));
    }
    let exe = std::env::current_exe().expect("own path");
    let spawn = || -> std::io::Result<Child> {
        let child = Command::new(&exe)
            .arg("worker")
            .arg("--port")
            .arg(port.to_string())
            .spawn()?;
        std::fs::write(pidfile, format!("{}\n", child.id()))?;
        eprintln!("supervisor: worker started (pid {})", child.id());
        Ok(child)
    };
    let mut child = match spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supervisor: cannot start worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        match child.try_wait() {
            Ok(Some(status)) if status.code() == Some(i32::from(CANNOT_LISTEN)) => {
                eprintln!("supervisor: the worker cannot listen on 127.0.0.1:{port}; stopping");
                let _ = std::fs::remove_file(pidfile);
                if let Some(p) = sup_pidfile {
                    let _ = std::fs::remove_file(p);
                }
                return ExitCode::FAILURE;
            }
            Ok(Some(status)) => {
                eprintln!(
                    "supervisor: worker exited ({status}); restarting in {} ms",
                    delay.as_millis()
                );
                let until = Instant::now() + delay;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match spawn() {
                    Ok(c) => child = c,
                    Err(e) => {
                        eprintln!("supervisor: cannot restart worker: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("supervisor: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Clean shutdown: the worker goes with us, and so do our files.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(pidfile);
    if let Some(p) = sup_pidfile {
        let _ = std::fs::remove_file(p);
    }
    ExitCode::SUCCESS
}

/// Set by SIGTERM/SIGINT; the supervisor loop polls it (an atomic store is all a
/// signal handler may safely do).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

/// Exit code of a worker that cannot listen on its port. Restarting it would fail the
/// same way, so the supervisor stops too, with a non-zero code, instead of looping.
const CANNOT_LISTEN: u8 = 3;

/// The worker: a tiny HTTP/1.1 service (one thread per connection, `Connection: close`).
fn worker(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("worker: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::from(CANNOT_LISTEN);
        }
    };
    // Scripts wait for this line (scripts/quickstart.sh) before running a drill.
    eprintln!(
        "worker: listening on 127.0.0.1:{port} (pid {})",
        std::process::id()
    );
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let requests = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let requests = requests.clone();
        std::thread::spawn(move || {
            let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = handle(stream, n, started, started_unix);
        });
    }
    ExitCode::SUCCESS
}

fn handle(mut s: TcpStream, n: u64, started: Instant, started_unix: u128) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        let k = s.read(&mut chunk)?;
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let pid = std::process::id();
    let (status, body) = match path {
        "/health" => (
            "200 OK",
            format!(r#"{{"status":"ok","pid":{pid},"started_at_ms":{started_unix}}}"#),
        ),
        "/stats" => (
            "200 OK",
            format!(
                r#"{{"pid":{pid},"requests":{n},"uptime_ms":{}}}"#,
                started.elapsed().as_millis()
            ),
        ),
        "/api/send" => ("200 OK", r#"{"errcode":0,"errmsg":"ok"}"#.to_string()),
        _ => ("404 Not Found", r#"{"error":"not found"}"#.to_string()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}
