//! imgadm's engine (being built).

pub mod error;
pub mod ids;
pub mod listing;
pub mod manifest;
pub mod pool;

pub use error::{Error, Result};
