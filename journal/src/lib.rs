//! The imgadm journal (being built).

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Other(String),
}
