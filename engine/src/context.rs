//! What every verb needs: the state directory, the journal, the config, the
//! chosen driver, who is running it, and where to report.

use std::sync::Arc;

use imgadm_journal::Journal;

use crate::error::{Error, Result};
use crate::ids::{ImageUuid, PoolName};
use crate::operation::Invocation;
use crate::pool::dir::DirPool;
use crate::pool::zfs::ZfsPool;
use crate::pool::{DriverKind, Pool};
use crate::report::Reporter;
use crate::state::{self, Config, StateDir};

pub struct Context {
    pub state: StateDir,
    pub journal: Journal,
    pub config: Config,
    pub driver: DriverKind,
    pub invocation: Invocation,
    pub reporter: Arc<dyn Reporter>,
}

impl Context {
    /// The context of this process: state from the environment, the config
    /// read, the driver chosen as `state::choose_driver` says.
    pub fn from_env(argv: Vec<String>, reporter: Arc<dyn Reporter>) -> Result<Context> {
        let state = StateDir::from_env();
        let config = Config::load(&state)?;
        let driver = state::choose_driver(&config)?;
        Ok(Context {
            journal: Journal::new(state.journal_dir()),
            state,
            config,
            driver,
            invocation: Invocation::current(argv),
            reporter,
        })
    }

    /// Opens one pool of this command's driver. `create` makes a missing dir
    /// pool (on first install); a missing zpool is always an error.
    pub fn open_pool(&self, name: &PoolName, create: bool) -> Result<Box<dyn Pool>> {
        match self.driver {
            DriverKind::Zfs => Ok(Box::new(ZfsPool::open(name)?)),
            DriverKind::Dir => Ok(Box::new(DirPool::open(&self.state.dir_pools_root(), name, create)?)),
        }
    }

    /// The pool a read or delete of `uuid` looks in. A dir pool that was
    /// never created holds nothing: the image is not installed there.
    pub fn open_pool_holding(&self, name: &PoolName, uuid: ImageUuid) -> Result<Box<dyn Pool>> {
        self.open_pool(name, false).map_err(|e| match (self.driver, &e) {
            (DriverKind::Dir, Error::PoolNotFound { .. }) => {
                Error::ImageNotInstalled { uuid: uuid.to_string(), pool: name.to_string() }
            }
            _ => e,
        })
    }

    /// Every image of `only`, or of every imported pool of the driver. A pool exported or
    /// destroyed between the listing of pools and its scan is skipped when
    /// no pool was named: it is no longer one of "every imported pool".
    pub fn scan_pools(&self, only: Option<&PoolName>) -> Result<Vec<crate::images::PoolImages>> {
        let zone_roots = crate::images::zone_roots();
        let names = match only {
            Some(name) => vec![name.clone()],
            None => self.pool_names()?,
        };
        let mut scans = Vec::new();
        for name in names {
            let scanned = self
                .open_pool(&name, false)
                .and_then(|pool| crate::images::PoolImages::scan(pool.as_ref(), &zone_roots));
            match scanned {
                Ok(scan) => scans.push(scan),
                // A dir pool that was never created holds no images.
                Err(Error::PoolNotFound { .. }) if self.driver == DriverKind::Dir => {}
                Err(_) if only.is_none() && !self.pool_names()?.contains(&name) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(scans)
    }

    fn pool_names(&self) -> Result<Vec<PoolName>> {
        match self.driver {
            DriverKind::Zfs => ZfsPool::imported(),
            DriverKind::Dir => DirPool::list(&self.state.dir_pools_root()),
        }
    }

    pub fn info(&self, line: &str) {
        self.reporter.info(line);
    }

    pub fn warn(&self, line: &str) {
        self.reporter.warn(line);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("state", &self.state).field("driver", &self.driver).finish()
    }
}

/// A missing zpool named with `-P` under the zfs driver.
pub fn no_such_pool(name: &PoolName, driver: DriverKind) -> Error {
    Error::PoolNotFound { pool: name.to_string(), driver: driver.to_string() }
}
