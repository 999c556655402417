//! `--var-file`: per-environment values from a YAML or `.env` file, with the same
//! rules as `--var` (declared names only, the command line wins, secrets stay secret)
//! and every problem named by `file:line:column` before anything runs.

use std::path::Path;

use crate::common::*;

fn plan(args: &[&str]) -> std::process::Output {
    firedrill()
        .arg("plan")
        .arg("scenarios/quickstart.yaml")
        .args(args)
        .env("FD_VARFILE_SECRET", "unused")
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn yaml_and_env_files_set_declared_vars_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("staging.yaml");
    std::fs::write(
        &yaml,
        "# staging\nport: 19555\npidfile: /tmp/from-yaml.pid\n",
    )
    .unwrap();
    let env = dir.path().join("ci.env");
    std::fs::write(&env, "# CI\nexport pidfile='/tmp/from env.pid'\n").unwrap();

    let out = plan(&["--var-file", path(&yaml)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(stdout.contains("http://127.0.0.1:19555/health"), "{stdout}");
    assert!(stdout.contains("/tmp/from-yaml.pid"), "{stdout}");

    // A later file wins over an earlier one, `--var` over every file.
    let out = plan(&[
        "--var-file",
        path(&yaml),
        "--var-file",
        path(&env),
        "--var",
        "port=19556",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(stdout.contains("/tmp/from env.pid"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:19556"), "{stdout}");
    assert!(!stdout.contains("19555"), "{stdout}");
}

#[test]
fn every_problem_of_every_var_file_is_named_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("bad.env");
    std::fs::write(&env, "port=1\nnot a line\nprot=hunter2secret\n").unwrap();
    let yaml = dir.path().join("bad.yaml");
    std::fs::write(&yaml, "pidfile: [a]\n").unwrap();
    let out = firedrill()
        .args(["validate", "scenarios/quickstart.yaml", "--var-file"])
        .arg(&env)
        .arg("--var-file")
        .arg(&yaml)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 2);
    let e = path(&env);
    assert!(
        stderr.contains(&format!("{e}:2:1: (document): found a line without `=`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:1:10: pidfile: found a list", path(&yaml))),
        "{stderr}"
    );
    // The unknown name, judged against the scenario, in the same run.
    assert!(
        stderr.contains(&format!(
            "{e}:3:1: prot: found `prot` in a var file, expected one of the vars declared in scenarios/quickstart.yaml (pidfile, port)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s); nothing was run"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

#[test]
fn a_secret_var_given_by_a_var_file_stays_secret() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: var-file-secret }
vars:
  token: { env: FD_VARFILE_SECRET, secret: true }
prechecks:
  - name: uses the token
    probe: { http: { url: "http://127.0.0.1:9/send?token={{token}}" } }
faults:
  - name: nothing much
    kind: process_kill
    with: { pidfile: /nonexistent/pid, signal: TERM }
"#,
    );
    let env = dir.path().join("secrets.env");
    std::fs::write(&env, "token=\"tok en<from-file>\"\n").unwrap();
    let out = firedrill()
        .arg("plan")
        .arg(&scenario)
        .arg("--var-file")
        .arg(&env)
        .env("FD_VARFILE_SECRET", "from-environment")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(stdout.contains("uses the token"), "{stdout}");
    for form in [
        "tok en<from-file>",
        "tok%20en",
        "from-file",
        "from-environment",
    ] {
        assert!(!stdout.contains(form), "`{form}` in {stdout}");
    }
}
