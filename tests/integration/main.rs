//! The integration tests: one test binary whose modules are the former
//! `tests/*.rs` files, so the library and its dependencies are linked once instead of
//! thirteen times (what cargo-nextest recommends; on a 2-core machine the links
//! dominated `cargo test --no-run`). Run one area with a module path filter, e.g.
//! `cargo test --test integration network_partition::`.
//!
//! A new test file is a module here (`mod my_area;` below), not a new file directly
//! under `tests/`: that would be a binary of its own again.

// Fixtures shared by the test modules.
mod common;
mod proxy_support;
mod report_support;

mod ci_examples;
mod deadman;
mod doctor;
mod drill_e2e;
mod evidence;
mod interrupted_record;
mod invalid_scenarios;
mod kubernetes;
mod kubernetes_real;
mod network_cli;
mod network_lab;
mod network_partition;
mod network_rate_limit;
mod notify;
mod probe_target;
mod process_kill;
mod proxy_http_fault;
mod proxy_latency;
mod proxy_transparent;
mod quickstart_script;
mod rehearse;
mod report_cli;
mod report_history;
mod report_integrity;
mod report_print;
mod report_render;
mod report_run;
mod report_traffic;
mod schema;
mod secrets_leak;
mod shell_injection;
mod side_by_side;
mod ssh_fleet;
mod ssh_target;
mod steady_state;
mod traffic_probe;
mod unbounded_input;
mod var_file;
mod wecom;
