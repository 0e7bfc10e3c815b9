//! Changeset layers: applying OCI layers onto snapshots and producing them from snapshots.

pub mod apply;
pub mod diff;
pub mod root;

pub use apply::{apply, Applied, Whiteouts};

#[cfg(test)]
mod tests;
