//! berthd as a library: the core ([`core`], one module per domain, in core types) and its
//! faces ([`edge`]: gRPC, the CRI, HTTP and the daemon's wiring), each in its own folder so
//! the layering is what `ls` shows.

pub mod core;
pub mod edge;

pub use crate::core::error::{Error, Kind, Result};
// What the CLI still borrows from the core (it is moving to the client crate).
pub use crate::core::{network, registry, seccomp, spec};
