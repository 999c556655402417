//! Execution: running `nft` on a target, and the operations built on it.
//!
//! [`run_json`] is the only function that starts `nft`: every operation is a JSON
//! document fed to `nft -j -f -` on the target (a batch to apply, a `list`
//! command), so a new kind of target only has to say how that one program with its
//! stdin reaches its host. On top of it: [`apply`] (one batch, one transaction),
//! [`list_table`] (what the run table holds and how many packets its rules
//! counted, as a [`TableView`](super::view::TableView)), and the idempotent deletions a revert needs
//! ([`delete_objects`], [`delete_table_if_empty`], [`delete_table`]), which treat
//! "already gone" as success.

use std::io;

use nftables::batch::Batch;

use super::NftError;
use super::table::{Objects, RunTable};
use super::view::TableView;
use crate::target::{Cmd, Output, Target};

/// The JSON document `nft -j -f -` reads for `batch`.
pub(crate) fn to_json(batch: Batch<'static>) -> String {
    let mut doc = serde_json::to_value(batch.to_nftables()).expect("nftables batch serialises");
    strip_elem_nulls(&mut doc);
    doc.to_string()
}

/// The crate writes absent optional fields of set elements as `null`; nft reads a
/// `"counter": null` there as "add a counter". Drop those keys.
fn strip_elem_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(e)) = m.get_mut("elem")
                && e.contains_key("val")
            {
                e.retain(|_, x| !x.is_null());
            }
            for x in m.values_mut() {
                strip_elem_nulls(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_elem_nulls),
        _ => {}
    }
}

/// Applies `batch` on `target` as one transaction (`nft -j -f -`).
pub(crate) async fn apply(target: &Target, batch: Batch<'static>) -> Result<(), NftError> {
    let out = run_json(target, to_json(batch)).await?;
    if out.success() {
        Ok(())
    } else {
        Err(failed(target, "applying a batch", &out))
    }
}

/// Lists the run table on `target`; `None` when it does not exist.
pub(crate) async fn list_table(
    target: &Target,
    table: &RunTable,
) -> Result<Option<TableView>, NftError> {
    // The JSON form of `nft -j list table inet NAME`: same output, and every
    // operation stays one document on nft's stdin.
    let list = serde_json::json!({"nftables": [
        {"list": {"table": {"family": "inet", "name": table.name()}}}
    ]});
    let out = run_json(target, list.to_string()).await?;
    if !out.success() {
        if no_such_object(&out) {
            return Ok(None);
        }
        return Err(failed(target, "listing the run table", &out));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|source| NftError::Json {
            target: target.describe(),
            source,
        })?;
    Ok(Some(TableView::parse(&doc)))
}

/// Deletes the run table on `target`. Idempotent: returns `false` when it was not
/// there. Only ever deletes a `firedrill_<run id>` table (see [`RunTable`]).
pub(crate) async fn delete_table(target: &Target, table: &RunTable) -> Result<bool, NftError> {
    let mut b = Batch::new();
    table.delete_table_in(&mut b);
    match apply(target, b).await {
        Ok(()) => Ok(true),
        Err(NftError::Failed { stderr, .. }) if is_enoent(&stderr) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `objs` from the run table, tolerating objects (or a table) that are
/// already gone: the fast path is one transaction; when it fails because something
/// is missing, only what is still present is deleted. Returns what was deleted.
pub(crate) async fn delete_objects(
    target: &Target,
    table: &RunTable,
    objs: &Objects,
) -> Result<Objects, NftError> {
    if objs.is_empty() {
        return Ok(Objects::default());
    }
    let mut b = Batch::new();
    objs.delete_in(table, &mut b);
    match apply(target, b).await {
        Ok(()) => return Ok(objs.clone()),
        Err(NftError::Failed { stderr, .. }) if is_enoent(&stderr) => {}
        Err(e) => return Err(e),
    }
    let Some(view) = list_table(target, table).await? else {
        return Ok(Objects::default());
    };
    let present = objs.present_in(&view);
    if !present.is_empty() {
        let mut b = Batch::new();
        present.delete_in(table, &mut b);
        apply(target, b).await?;
    }
    Ok(present)
}

/// Deletes the run table if nothing is left in it. Returns whether it was deleted.
pub(crate) async fn delete_table_if_empty(
    target: &Target,
    table: &RunTable,
) -> Result<bool, NftError> {
    match list_table(target, table).await? {
        Some(v) if v.is_empty() => delete_table(target, table).await,
        _ => Ok(false),
    }
}

fn is_enoent(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

fn no_such_object(out: &Output) -> bool {
    is_enoent(&String::from_utf8_lossy(&out.stderr))
}

fn failed(target: &Target, what: &str, out: &Output) -> NftError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    NftError::Failed {
        target: target.describe(),
        what: what.to_string(),
        stderr: if stderr.is_empty() {
            match out.code {
                Some(c) => format!("exit status {c}"),
                None => "ended by a signal".to_string(),
            }
        } else {
            stderr.join(" | ")
        },
    }
}

/// The `nft` program: `FIREDRILL_NFT` if set, else from `PATH`, else the usual
/// `/usr/sbin/nft` (non-login root shells do not always have sbin in `PATH`).
pub(crate) fn nft_program() -> String {
    if let Ok(p) = std::env::var("FIREDRILL_NFT")
        && !p.is_empty()
    {
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("nft").is_file()));
    if on_path {
        "nft".into()
    } else {
        "/usr/sbin/nft".into()
    }
}

/// Runs `nft -j -f -` on `target` with the JSON document `doc` on its stdin: the
/// one place that starts `nft`, through the target interface, so that any target
/// kind that can run a program with stdin (a namespace here, an SSH host later) can
/// carry the run's table.
pub(crate) async fn run_json(target: &Target, doc: String) -> Result<Output, NftError> {
    let cmd = Cmd::new(nft_program()).args(["-j", "-f", "-"]).stdin(doc);
    target.run(&cmd).await.map_err(|e| NftError::Spawn {
        target: target.describe(),
        source: io::Error::new(e.kind(), e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_view_reads_listing() {
        let doc = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "firedrill_r1", "handle": 6}},
            {"set": {"family": "inet", "name": "s4", "table": "firedrill_r1", "type": "ipv4_addr",
                     "elem": [{"elem": {"val": "10.9.9.9", "timeout": 30, "expires": 29}}]}},
            {"chain": {"family": "inet", "table": "firedrill_r1", "name": "out", "hook": "output"}},
            {"rule": {"family": "inet", "table": "firedrill_r1", "chain": "out", "handle": 3,
                      "expr": [{"counter": {"packets": 7, "bytes": 420}}, {"drop": null}]}}
        ]});
        let v = TableView::parse(&doc);
        assert_eq!(v.chains, ["out"]);
        assert_eq!(v.sets[0].elems, 1);
        assert_eq!(v.packets_in(&["out".into()]), 7);
        assert!(!v.is_empty());
    }
}

/// Against the real kernel, inside a namespace made for the test (root only).
#[cfg(test)]
mod kernel_tests {
    use std::process::Command;

    use std::time::Duration;

    use super::*;
    use crate::nft::table::tests::{web_rule, with_sets};
    use crate::nft::*;

    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn netns(tag: &str) -> Option<(Ns, Target)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to create a network namespace");
            return None;
        }
        let name = format!("fdunit-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: `ip netns add` is not available");
            return None;
        }
        let t = Target::Netns { name: name.clone() };
        Some((Ns(name), t))
    }

    #[tokio::test]
    async fn apply_list_and_delete_in_a_namespace() {
        let Some((_ns, target)) = netns("nft") else {
            return;
        };
        let v4 = ["10.0.0.0/24".parse().unwrap(), "10.1.0.1".parse().unwrap()];
        let v6 = ["2001:db8::/32".parse().unwrap()];
        let (t, mut b) = with_sets(
            "20261128T112233Z1a2b",
            &[
                ("f_a_v4", AddrFamily::V4, &v4),
                ("f_a_v6", AddrFamily::V6, &v6),
            ],
            Duration::from_secs(60),
        );
        t.add_filter_chain(&mut b, "f_a_out", FilterHook::Output, PRIO_EARLY);
        t.add_filter_chain(&mut b, "f_a_in", FilterHook::Input, PRIO_EARLY);
        t.add_regular_chain(&mut b, "f_a_lim");
        t.add_rule(
            &mut b,
            "f_a_lim",
            vec![ct_state_new(), limit_over(20, 2), counter(), drop()],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            web_rule("f_a_v4", &["tcp", "udp"], reject_icmpx(Unreachable::Port)),
            Some("firedrill test"),
        );
        t.add_rule(
            &mut b,
            "f_a_in",
            vec![
                addr_in_set(AddrFamily::V6, Side::Src, "f_a_v6"),
                counter(),
                drop(),
            ],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            vec![
                addr_in_set(AddrFamily::V6, Side::Dst, "f_a_v6"),
                l4proto_in(&["tcp"]),
                reject_tcp_reset(),
            ],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            vec![
                addr_in_set(AddrFamily::V4, Side::Dst, "f_a_v4"),
                jump("f_a_lim"),
            ],
            None,
        );
        let redirect = t.add_redirect(&mut b, "f_p", &v4, 443, 15443, Duration::from_secs(60));
        apply(&target, b).await.unwrap();

        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.chains.len(), 5, "{v:?}");
        let s4 = v.sets.iter().find(|st| st.name == "f_a_v4").unwrap();
        assert_eq!(s4.elems, 2);
        assert_eq!(v.rules.len(), 7, "{v:?}");
        assert_eq!(redirect.chains, ["f_p_nat_out", "f_p_nat_pre"]);

        // Idempotent deletion: the second time, nothing is left to delete.
        let objs = Objects {
            chains: vec!["f_a_out".into(), "f_a_in".into(), "f_a_lim".into()],
            sets: vec!["f_a_v4".into(), "f_a_v6".into()],
        };
        assert_eq!(delete_objects(&target, &t, &objs).await.unwrap(), objs);
        assert!(delete_objects(&target, &t, &objs).await.unwrap().is_empty());
        assert!(
            !delete_table_if_empty(&target, &t).await.unwrap(),
            "redirect objects remain"
        );
        delete_objects(&target, &t, &redirect).await.unwrap();
        assert!(delete_table_if_empty(&target, &t).await.unwrap());
        assert!(!delete_table(&target, &t).await.unwrap());
        assert!(list_table(&target, &t).await.unwrap().is_none());
        assert!(delete_objects(&target, &t, &objs).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn elements_expire_by_themselves() {
        let Some((_ns, target)) = netns("ttl") else {
            return;
        };
        let one = ["10.0.0.1".parse().unwrap()];
        let (t, b) = with_sets(
            "ttltest",
            &[("s", AddrFamily::V4, &one)],
            Duration::from_millis(900),
        );
        apply(&target, b).await.unwrap();
        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.sets[0].elems, 1);
        std::thread::sleep(Duration::from_millis(1300));
        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.sets[0].elems, 0, "the element outlived its timeout");
        assert!(delete_table(&target, &t).await.unwrap());
    }
}
