//! One module per verb (or family of read-only verbs).

pub mod avail;
pub mod create;
pub mod delete;
pub mod import;
pub mod install;
pub mod publish;
pub mod query;
pub mod show;
pub mod sources;
pub mod update;
pub mod vacuum;
