//! The target interface on real processes and sockets: `local` always, `netns` as
//! root (a namespace of its own per test; skipped with a reason when unprivileged,
//! failed in CI).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::*;

/// A namespace with its loopback up, deleted on drop.
struct Ns(String);

impl Ns {
    /// The namespace and its target, or `None` after printing why not.
    fn new(test: &str) -> Option<(Ns, Target)> {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "{test} needs root in CI");
            eprintln!("skipped {test}: needs root to create a network namespace");
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("fdunit-tgt-{}-{n}", std::process::id());
        let ok = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(ok(&["netns", "add", &name]), "ip netns add {name}");
        let ns = Ns(name.clone());
        assert!(ok(&["-n", &name, "link", "set", "lo", "up"]));
        Some((ns, Target::Netns { name }))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn stdin_env_and_exit_code(t: &Target) {
    let out = t
        .run(
            &Cmd::new("sh")
                .args(["-c", r#"cat; printf '|%s' "$FD_TARGET_TEST"; exit 3"#])
                .stdin("from stdin")
                .envs([("FD_TARGET_TEST", "from env")]),
        )
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "from stdin|from env");
    assert_eq!(
        out.code,
        Some(3),
        "a failing program is an output, not an error"
    );
    assert!(!out.success());
}

async fn arguments_are_literal(t: &Target) {
    let marker = std::env::temp_dir().join(format!("fd-target-lit-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let evil = format!(";touch {}", marker.display());
    let out = t
        .run(&Cmd::new("printf").args(["%s|%s|%s", &evil, "$(id)", "`id` *"]))
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), format!("{evil}|$(id)|`id` *"));
    assert!(!marker.exists(), "an argument reached a shell");
}

async fn timeout_kills(t: &Target) {
    let pidfile = std::env::temp_dir().join(format!(
        "fd-target-timeout-{}-{}",
        std::process::id(),
        t.lock_key()
    ));
    let line = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    let start = Instant::now();
    let e = t
        .run(
            &Cmd::new("sh")
                .args(["-c", &line])
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::TimedOut { .. }), "{e}");
    assert!(e.to_string().contains("timed out after"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pidfile);
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gone() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone(), "the timed-out program {pid} still runs");
}

/// A helper started with `spawn` talks through its pipes and dies with its handle.
async fn spawned_helper(t: &Target) {
    use tokio::io::AsyncReadExt;
    let mut child = t
        .spawn(
            &Cmd::new("sh")
                .args(["-c", "read line; echo \"got $line\"; exec sleep 30"])
                .stdin(""),
        )
        .await
        .unwrap();
    let pid = child.id().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(b"ping\n").await.unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), out.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"got ping\n");
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(3);
    let alive =
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(), "the helper {pid} outlived its handle");
}

#[tokio::test]
async fn run_on_local() {
    let t = Target::Local;
    stdin_env_and_exit_code(&t).await;
    arguments_are_literal(&t).await;
    timeout_kills(&t).await;
    spawned_helper(&t).await;
    let e = t
        .run(&Cmd::new("firedrill-no-such-program"))
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Spawn { .. }), "{e}");
    assert!(e.to_string().contains("on local"), "{e}");
}

#[tokio::test]
async fn run_on_netns_runs_inside_it() {
    let Some((ns, t)) = Ns::new("run_on_netns_runs_inside_it") else {
        return;
    };
    stdin_env_and_exit_code(&t).await;
    arguments_are_literal(&t).await;
    timeout_kills(&t).await;
    spawned_helper(&t).await;
    // The program's network namespace is the target's, not ours.
    let out = t
        .run(&Cmd::new("readlink").arg("/proc/self/ns/net"))
        .await
        .unwrap();
    let theirs = text(&out.stdout).trim().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(theirs, ours.display().to_string());
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(netns::netns_path(&ns.0)).unwrap().ino();
    assert_eq!(theirs, format!("net:[{ino}]"));
}

#[tokio::test]
async fn connect_tcp_and_resolve_on_local() {
    let t = Target::Local;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = t
        .connect_tcp(addr, Some(Duration::from_secs(2)), None)
        .await
        .unwrap();
    assert_eq!(s.peer_addr().unwrap(), addr);
    drop(l);
    let e = t
        .connect_tcp(addr, Some(Duration::from_secs(2)), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains("from local"), "{e}");

    let a = t.resolve("127.0.0.1", 80).await.unwrap();
    assert_eq!(a, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
    let a = t.resolve("localhost", 80).await.unwrap();
    assert!(
        a.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
        "{a:?}"
    );
    let e = t.resolve("no-such-host.invalid", 80).await.unwrap_err();
    assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
}

#[tokio::test]
async fn connect_tcp_resolve_and_listen_on_netns_stay_inside_it() {
    let Some((ns, t)) = Ns::new("connect_tcp_on_netns") else {
        return;
    };
    // A port free on this host, listened on only inside the namespace.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let l = t.listen_tcp(addr).await.unwrap();
    let s = t
        .connect_tcp(addr, Some(Duration::from_secs(2)), Some(0x6664))
        .await
        .unwrap();
    assert_eq!(s.peer_addr().unwrap(), addr);
    let e = Target::Local
        .connect_tcp(addr, Some(Duration::from_secs(2)), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");

    // An async job (its own runtime) in the namespace reaches the same listener.
    let got = t
        .in_network_async(move || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(|s| s.peer_addr().unwrap())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap();
    assert_eq!(got, Ok(addr));
    drop(l);

    let a = t.resolve("localhost", 9).await.unwrap();
    assert!(
        a.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
        "{a:?}"
    );
    assert!(!t.is_gone());
    let name = ns.0.clone();
    drop(ns);
    let gone = Target::Netns { name };
    assert!(gone.is_gone());
    let e = gone.resolve("localhost", 9).await.unwrap_err();
    assert!(e.to_string().contains("ip netns add"), "{e}");
}
