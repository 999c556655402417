//! Skipping a test that cannot run on this machine (no root, no `nft`, ...), except
//! in CI: there a skip would let the run pass without testing anything, so the test
//! fails with the reason instead. Every skip goes through [`can_run`].

/// What to do with a test, given why it cannot run here (if it cannot).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Return early, after printing the reason.
    Skip(String),
    /// Panic with the reason: CI must run every test.
    Fail(String),
}

/// The decision itself, from explicit inputs (so it can be tested without changing
/// the environment or the user the tests run as).
pub fn decide(test: &str, missing: Option<String>, ci: bool) -> Verdict {
    match missing {
        None => Verdict::Run,
        Some(why) if ci => Verdict::Fail(format!(
            "{test} cannot run here: {why}; CI is set, so it fails instead of skipping"
        )),
        Some(why) => Verdict::Skip(format!("skipped {test}: {why}")),
    }
}

/// Whether the value of `CI` marks a CI run: set and not empty, `0` or `false` (the
/// rule insta uses to refuse creating snapshots, so both agree on what CI is).
pub fn is_ci(value: Option<&str>) -> bool {
    !matches!(value, None | Some("" | "0" | "false"))
}

/// True when `test` can run; otherwise prints why and returns false, or, when the
/// environment variable `CI` is set, panics with why.
pub fn can_run(test: &str, missing: Option<String>) -> bool {
    let ci = is_ci(std::env::var("CI").ok().as_deref());
    match decide(test, missing, ci) {
        Verdict::Run => true,
        Verdict::Skip(msg) => {
            eprintln!("{msg}");
            false
        }
        Verdict::Fail(msg) => panic!("{msg}"),
    }
}

/// [`can_run`] for a test that needs root: `to` says what for ("to mount a tmpfs").
pub fn can_run_as_root(test: &str, to: &str) -> bool {
    let missing = (!nix::unistd::geteuid().is_root()).then(|| format!("needs root {to}"));
    can_run(test, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_that_cannot_run_skips_locally_and_fails_in_ci() {
        assert_eq!(decide("lab", None, false), Verdict::Run);
        assert_eq!(decide("lab", None, true), Verdict::Run);
        assert_eq!(
            decide("lab", Some("needs root".into()), false),
            Verdict::Skip("skipped lab: needs root".into())
        );
        assert_eq!(
            decide("lab", Some("needs root".into()), true),
            Verdict::Fail(
                "lab cannot run here: needs root; CI is set, so it fails instead of skipping"
                    .into()
            )
        );
    }

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for v in ["true", "1", "yes", "github"] {
            assert!(is_ci(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("0"), Some("false")] {
            assert!(!is_ci(v), "{v:?}");
        }
    }

    /// The child of [`can_run_reads_ci_from_the_environment`]: asks to skip.
    #[test]
    #[ignore = "run only as the child of can_run_reads_ci_from_the_environment"]
    fn can_run_child() {
        if std::env::var_os("FD_SKIP_CHILD").is_some() {
            assert!(!can_run("probe", Some("a reason".into())));
        }
    }

    /// The real wiring, in a child process of this test binary so that the
    /// environment of the tests running in parallel is left alone.
    #[test]
    fn can_run_reads_ci_from_the_environment() {
        let child = |ci: Option<&str>| {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            c.args([
                "common::skip::tests::can_run_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FD_SKIP_CHILD", "1");
            match ci {
                Some(v) => c.env("CI", v),
                None => c.env_remove("CI"),
            };
            let out = c.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let (ok, text) = child(None);
        assert!(ok && text.contains("skipped probe: a reason"), "{text}");
        assert!(
            text.contains("1 passed"),
            "the child test did not run: {text}"
        );
        let (ok, text) = child(Some("true"));
        assert!(!ok, "CI set, yet the skip passed: {text}");
        assert!(
            text.contains("probe cannot run here: a reason; CI is set"),
            "{text}"
        );
    }
}
