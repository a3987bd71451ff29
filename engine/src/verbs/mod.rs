//! One module per verb (or family of read-only verbs).

pub mod create;
pub mod delete;
pub mod install;
pub mod query;
pub mod vacuum;
