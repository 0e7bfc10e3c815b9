//! The runtime's southbound edge: ttrpc to shims. [`client`] drives one shim's Task API in
//! core types and is what the core runtime is handed ([`client::TtrpcShims`]); [`bootstrap`]
//! is what a shim is given and answers at `start`; [`ttrpc`] is the protocol's framing and
//! the events socket shims forward task events to.

pub mod bootstrap;
pub mod client;
pub mod ttrpc;

pub use client::{cgroup_figures, status_out, TtrpcShims};
