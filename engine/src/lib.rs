//! imgadm's engine: everything that decides, nothing that prints.
//!
//! A verb (`verbs::install`, `verbs::delete`, ...) runs as an
//! [`operation::Operation`]: a journal record of named steps, each written
//! "begun" before its effect and "done" once the effect is durable. The
//! steps that change things live in [`steps`] with their probe and undo, so
//! [`recovery`] can resume or roll back an operation a crash interrupted.
//!
//! Images come from local files (`verbs::install`) or from image sources
//! ([`source`]: the `sources` config and an IMGAPI client whose downloads
//! stream straight into the receive pipeline, resumable with Range;
//! `verbs::import`, `verbs::avail`, `verbs::show`, `verbs::sources`).
//!
//! The seams the engine calls are its own traits: [`pool::Pool`] (drivers
//! `zfs` and `dir`) and [`report::Reporter`] (the CLI's output). Names that
//! reach a pool are parsed types ([`ids::DatasetName`] from a
//! [`ids::PoolName`] and an [`ids::ImageUuid`]), never raw strings.
//!
//! ```no_run
//! use std::sync::Arc;
//! use imgadm_engine::{context::Context, ids::{ImageUuid, PoolName}, report::Silent, verbs};
//! let cx = Context::from_env(vec!["imgadm".into(), "get".into()], Arc::new(Silent))?;
//! let uuid = ImageUuid::parse("5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01")?;
//! let info = verbs::query::get(&cx, Some(&PoolName::default()), uuid, false)?;
//! println!("{info}");
//! # Ok::<(), imgadm_engine::Error>(())
//! ```

pub mod cache;
pub mod codec;
pub mod compression;
pub mod context;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod ids;
pub mod images;
pub mod listing;
pub mod lock;
pub mod manifest;
pub mod operation;
pub mod pipeline;
pub mod pool;
pub mod readahead;
pub mod recovery;
pub mod report;
pub mod source;
pub mod state;
pub mod steps;
pub mod verbs;
pub mod vmadm;
pub mod zstream;

pub use error::{Error, Result};
