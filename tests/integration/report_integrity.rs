//! The integrity of a real run's report directory, through the binary: its manifest
//! verifies, one altered byte is named by `firedrill verify`, a signature made with
//! `--sign-key` verifies under its public key only, and a bad key stops the run before
//! anything is injected. Also: the exercise record of a real run (metadata,
//! `--participant`, the scenario text, the build's commit).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

/// A short drill: a SIGSTOP on the marker (undone by SIGCONT), with exercise metadata.
fn scenario(marker: &Marker) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata:
  name: sealed
  owner: messaging-sre
  exercise_id: BCP-TEST-1
  environment: test-lab
  systems: [marker]
  rationale: the marker must survive a freeze
  risk_ref: BIA-99
  participants: [ {{ name: Alice, role: exercise lead }} ]
  findings: {{ due_in: 14d }}
prechecks:
  - name: up
    probe: {{ command: {{ run: "true" }} }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 5m
verifications:
  - name: frozen
    critical: false
    probe: {{ command: {{ run: "false" }} }}
"#,
        tag = marker.tag
    )
}

fn verify(dir: &Path, pubkey: Option<&Path>) -> (i32, String) {
    let mut c = firedrill();
    c.arg("verify").arg(dir);
    if let Some(k) = pubkey {
        c.arg("--pubkey").arg(k);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn keygen(path: &Path) -> PathBuf {
    let out = firedrill().arg("keygen").arg(path).output().unwrap();
    assert_exit(&out, 0);
    PathBuf::from(format!("{}.pub", path.display()))
}

/// Runs the drill, signed with `key`; its report directory.
fn signed_run(dir: &Path, key: &Path) -> PathBuf {
    let marker = Marker::spawn("sealed");
    let scen = write_scenario(dir, &scenario(&marker));
    let reports = dir.join("reports");
    let out = run_cmd(&scen, &dir.join("state"), &reports)
        .arg("--sign-key")
        .arg(key)
        .args(["--participant", "Bob:observer"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(marker.state(), 'S', "the marker runs again after the drill");
    report_dir(&reports)
}

#[test]
fn a_report_directory_verifies_and_one_altered_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("drill.key");
    let public = keygen(&key);
    let rdir = signed_run(dir.path(), &key);
    let manifest = std::fs::read_to_string(rdir.join("MANIFEST.sha256")).unwrap();
    for f in ["journal.json", "report.html", "report.md", "junit.xml"] {
        assert!(manifest.contains(&format!("  {f}\n")), "{manifest}");
    }
    let (code, out) = verify(&rdir, Some(&public));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signature: valid"), "{out}");
    assert!(out.contains("ok: 4 file(s)"), "{out}");
    // `sha256sum -c` reads the same manifest.
    let sums = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "MANIFEST.sha256"])
        .current_dir(&rdir)
        .status()
        .unwrap();
    assert!(sums.success());

    // One byte of the HTML report changed: that file, and only it, is named.
    let html = rdir.join("report.html");
    let mut bytes = std::fs::read(&html).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&html, &bytes).unwrap();
    let (code, out) = verify(&rdir, Some(&public));
    assert_eq!(code, 1, "{out}");
    let named: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ALTERED") || l.starts_with("MISSING") || l.starts_with("EXTRA"))
        .collect();
    assert_eq!(named.len(), 1, "{out}");
    assert!(named[0].starts_with("ALTERED: report.html "), "{out}");
    // The signature is still good: the manifest was not touched.
    assert!(out.contains("signature: valid"), "{out}");
    bytes[i] ^= 0x01;
    std::fs::write(&html, &bytes).unwrap();

    // A file removed and one added are named too.
    std::fs::rename(rdir.join("junit.xml"), dir.path().join("junit.xml")).unwrap();
    std::fs::write(rdir.join("notes.txt"), "added later").unwrap();
    let (code, out) = verify(&rdir, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISSING: junit.xml"), "{out}");
    assert!(out.contains("EXTRA: notes.txt"), "{out}");
    assert!(!out.contains("ALTERED"), "{out}");
}

#[test]
fn a_bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("drill.key");
    let public = keygen(&key);
    let other_public = keygen(&dir.path().join("other.key"));
    let rdir = signed_run(dir.path(), &key);
    // Another key's public half: refused.
    let (code, out) = verify(&rdir, Some(&other_public));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SIGNATURE INVALID"), "{out}");
    // A forger rewrites the journal and its manifest line, keeping the signature.
    let journal = rdir.join("journal.json");
    let text = std::fs::read_to_string(&journal)
        .unwrap()
        .replace("\"passed\"", "\"failed\"");
    std::fs::write(&journal, &text).unwrap();
    let manifest_path = rdir.join("MANIFEST.sha256");
    let manifest: String = std::fs::read_to_string(&manifest_path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with("  journal.json") {
                use sha2::Digest;
                let h = sha2::Sha256::digest(text.as_bytes());
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                format!("{hex}  journal.json\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&manifest_path, manifest).unwrap();
    let (code, out) = verify(&rdir, Some(&public));
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.contains("ALTERED"),
        "the forged manifest matches: {out}"
    );
    assert!(out.contains("SIGNATURE INVALID"), "{out}");
    // A damaged signature file.
    std::fs::write(rdir.join("MANIFEST.sig"), "00\n").unwrap();
    let (code, out) = verify(&rdir, Some(&public));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SIGNATURE INVALID"), "{out}");
    // No signature at all, but a key to check it with.
    std::fs::remove_file(rdir.join("MANIFEST.sig")).unwrap();
    let (code, out) = verify(&rdir, Some(&public));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SIGNATURE MISSING"), "{out}");
}

/// A signing key that cannot be read stops the run before anything is injected.
#[test]
fn an_unreadable_sign_key_injects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("badkey");
    let scen = write_scenario(dir.path(), &scenario(&marker));
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "not a key\n").unwrap();
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .arg("--sign-key")
        .arg(&key)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 2);
    assert!(
        stderr.contains("--sign-key") && stderr.contains("nothing was injected"),
        "{stderr}"
    );
    assert!(!reports.exists(), "no report directory");
    assert!(!dir.path().join("state").exists(), "no ledger");
    assert_eq!(marker.state(), 'S', "the marker was never stopped");
}

/// The exercise record of a real run: metadata, `--participant`, the whole scenario
/// text, the build's version and commit, findings with owner, due date and status.
#[test]
fn a_real_run_carries_its_exercise_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("drill.key");
    keygen(&key);
    let rdir = signed_run(dir.path(), &key);
    let j: firedrill::model::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(rdir.join("journal.json")).unwrap()).unwrap();
    assert_eq!(j.exercise.id.as_deref(), Some("BCP-TEST-1"));
    assert_eq!(j.exercise.environment.as_deref(), Some("test-lab"));
    assert_eq!(j.exercise.risk_ref.as_deref(), Some("BIA-99"));
    let who: Vec<(&str, &str)> = j
        .exercise
        .participants
        .iter()
        .map(|p| (p.name.as_str(), p.role.as_str()))
        .collect();
    assert_eq!(who, [("Alice", "exercise lead"), ("Bob", "observer")]);
    let text = std::fs::read_to_string(dir.path().join("s.yaml")).unwrap();
    assert_eq!(j.scenario.text.as_deref(), Some(text.as_str()));
    let commit = j.tool.commit.as_deref().expect("built in a git checkout");
    assert_eq!(commit.len(), 40, "{commit}");
    // The non-critical verification failed: a finding with its follow-up fields.
    let f = &j.improvements[0];
    assert_eq!(f.owner.as_deref(), Some("messaging-sre"));
    assert_eq!(f.status, firedrill::scenario::FindingStatus::Open);
    let due = f.due.as_deref().unwrap();
    assert!(
        due > &j.started_at[..10],
        "due {due} after {}",
        j.started_at
    );
    let html = std::fs::read_to_string(rdir.join("report.html")).unwrap();
    for must in [
        "BCP-TEST-1",
        "test-lab",
        "BIA-99",
        "Bob",
        "observer",
        commit,
        "Sign-off",
    ] {
        assert!(html.contains(must), "report.html lacks {must}");
    }
}
