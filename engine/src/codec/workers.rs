//! A small fixed pool of worker threads for the block codecs: jobs are
//! closures run in the order they were queued; each job sends its result
//! on a channel of its own, so callers collect results in queue order and
//! bound how many jobs they keep in flight.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

pub struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

/// How many threads a codec (or `list`'s cache reading) runs: one per
/// core, at least one.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    pub fn new(name: &str, threads: usize) -> std::io::Result<Workers> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            let handle = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || loop {
                // The lock is held only to take the next job, not to run it.
                let next = match receiver.lock() {
                    Ok(jobs) => jobs.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            })?;
            handles.push(handle);
        }
        Ok(Workers { jobs: Some(sender), threads: handles })
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Queues `job`. It runs after every job queued before it has started.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(jobs) = &self.jobs {
            // Fails only when every worker is gone; the job's result channel
            // then closes without a result, which its caller reports.
            let _ = jobs.send(Box::new(job));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current job; a job
        // blocked on sending to a dropped receiver fails at once.
        self.jobs.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}
