//! What the two nftables faults share: destinations (`to:`), protocol and action
//! parameters, host-name resolution, the control-path safety check, the TCP probe
//! that measures an effect, and the undo record with its revert.
//!
//! `network_partition.rs` and `network_rate_limit.rs` only decide which rules to
//! build and how to read their effect; everything that touches the kernel goes
//! through [`crate::nft`], inside the run's own table. One file per concern:
//! [`params`] (the parameter words and the statements they stand for), [`dest`]
//! (parsing, validating and resolving `to:`), [`probe`] (measuring from the
//! target), [`undo`] (the undo record and its revert).

mod dest;
mod params;
mod probe;
mod undo;

#[cfg(test)]
pub(crate) use dest::Resolved;
pub(crate) use dest::{groups, parse_dest, resolve, validate_common};
pub(crate) use params::{Action, Direction, Protocol, selector, verdict};
pub(crate) use probe::{Outcome, connect_once, probe_point, probe_until};
pub(crate) use undo::Undo;
