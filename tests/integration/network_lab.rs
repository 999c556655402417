//! The lab script and the shipped drill: `scenarios/lab/netns-lab.sh up`, `firedrill
//! run scenarios/network-partition.yaml`, `netns-lab.sh down`, with a private
//! prefix so the test never touches a developer's own lab.

use crate::common;

use std::process::Command;

fn lab(prefix: &str, verb: &str) -> std::process::Output {
    Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/lab/netns-lab.sh"
        ))
        .arg(verb)
        .env("FDLAB_PREFIX", prefix)
        .output()
        .expect("run netns-lab.sh")
}

/// Takes the lab down even when the test fails half-way.
struct Down(String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&self.0, "down");
    }
}

#[test]
fn lab_script_and_network_partition_drill() {
    if !common::netns::available("lab_script_and_network_partition_drill") {
        return;
    }
    let prefix = format!("fdl{}", std::process::id());
    let up = lab(&prefix, "up");
    let _down = Down(prefix.clone());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let client = format!("{prefix}-client");
    let tmp = tempfile::tempdir().unwrap();
    let out = common::firedrill()
        .arg("run")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/network-partition.yaml"
        ))
        .arg("--var")
        .arg(format!("client_ns={client}"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--report-dir")
        .arg(tmp.path().join("reports"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let rules = Command::new("ip")
        .args(["netns", "exec", &client, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rules.stdout),
        "",
        "the drill left rules behind"
    );
    let down = lab(&prefix, "down");
    assert!(down.status.success());
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&prefix));
    assert!(!std::path::Path::new(&format!("/run/{prefix}")).exists());
}
