//! One module per verb (or family of read-only verbs).

pub mod delete;
pub mod install;
pub mod query;
