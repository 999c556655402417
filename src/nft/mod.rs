//! nftables: the one place that builds and applies firedrill's packet-filter rules.
//!
//! Why a module of its own: network faults (`network_partition`,
//! `network_rate_limit`) and the chaos proxy's transparent mode all change the
//! kernel's ruleset, and all must keep the same promises:
//!
//! - **Ownership.** Each run owns exactly one table, `inet firedrill_<run id>`
//!   ([`RunTable`]); every chain and set a fault creates lives there, named after
//!   the fault ([`object_prefix`]). Nothing here can name, change or delete any
//!   other table: [`RunTable::from_name`] refuses names that are not ours, and rules
//!   in foreign tables are never touched. (Our own table cannot override an
//!   `accept` in a foreign table, but our `drop`/`reject` stands: a packet has to
//!   pass every base chain on its hook.)
//! - **Dead-man.** Addresses live in sets whose elements carry a `timeout` equal to
//!   the fault's ttl. If the engine dies, the elements expire, the rules match
//!   nothing and traffic flows again, without anybody running anything.
//! - **Atomic and fast.** A fault is one JSON batch ([`nftables::batch::Batch`])
//!   applied with a single `nft -j -f -` (one process start, one kernel
//!   transaction). For a `netns` target, `nft` is started from a thread that entered
//!   the namespace with `setns(2)` (see [`crate::target::netns`]) rather than
//!   through `ip netns exec`, which costs a second process and a mount namespace.
//!
//! The module follows those seams, one file each:
//! - [`addr`]: IP networks ([`IpNet`]) and address families, the values that go
//!   into address sets;
//! - [`table`]: names (the run table, per-fault object prefixes) and the
//!   [`RunTable`] builders for what a fault puts in it (address sets with timeouts,
//!   base and regular chains, rules, the proxy's NAT redirect), plus the
//!   [`Objects`] list an undo record keeps;
//! - [`stmt`]: the statements rules are made of (matches, counters, limits,
//!   verdicts);
//! - [`exec`]: running `nft` on a target ([`exec::run_json`], the only place that
//!   starts it: `nft -j -f -` with a JSON document on its stdin), and what is built on that: [`apply`], [`list_table`] and the
//!   idempotent deletions.
//!
//! Callers use everything through this module (`crate::nft::…`); the files are
//! how it is organised, not separate APIs.

mod addr;
mod exec;
pub(crate) use exec::nft_program;
mod stmt;
mod table;
mod view;

use std::borrow::Cow;
use std::io;

use table::{MAX_RUN_ID, TABLE_PREFIX};

pub(crate) use addr::{AddrFamily, IpNet, normalize};
#[cfg(test)]
pub(crate) use exec::to_json;
pub(crate) use exec::{apply, delete_objects, delete_table_if_empty, list_table};
pub(crate) use stmt::{
    Side, Statement, Unreachable, accept, addr_eq, addr_in_set, counter, ct_state_new, drop,
    icmp_unreachable, jump, l4proto_in, limit_over, port_in, redirect_to, reject_icmpx,
    reject_tcp_reset, ret, tcp_rst,
};
pub(crate) use table::{
    FilterHook, NatHook, Objects, PRIO_AFTER_CONNTRACK, PRIO_EARLY, RunTable, object_prefix,
    table_name, ttl_secs,
};
pub(crate) use view::TableView;

/// Why talking to nftables failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NftError {
    #[error(
        "found run id `{0}`, expected 1 to {MAX_RUN_ID} letters, digits or `_` (it names the nftables table)"
    )]
    BadRunId(String),
    #[error(
        "refusing to touch table `{0}`: firedrill only changes tables named {TABLE_PREFIX}<run id>"
    )]
    ForeignTable(String),
    #[error("cannot run nft on {target}: {source}")]
    Spawn { target: String, source: io::Error },
    #[error("nft on {target} failed while {what}: {stderr}")]
    Failed {
        target: String,
        what: String,
        stderr: String,
    },
    #[error("nft on {target} printed JSON that cannot be read: {source}")]
    Json {
        target: String,
        source: serde_json::Error,
    },
}

/// An owned string for the `nftables` crate's `Cow` fields.
fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}
