//! The core error type. Core code reports a [`Kind`]; each transport maps kinds to its own
//! status codes in exactly one place (`grpc::status`).

use std::fmt;

/// What went wrong, in the terms clients act upon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    /// The resource is busy (a locked ingest ref); the client may retry.
    Unavailable,
    OutOfRange,
    /// A registry wants credentials the caller did not give (or refused them).
    Unauthenticated,
    /// A request or a client's backlog is larger than berthd keeps for anyone.
    ResourceExhausted,
    /// The caller's deadline (or a timeout it gave) passed first.
    DeadlineExceeded,
    Internal,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::NotFound => "not found",
            Kind::AlreadyExists => "already exists",
            Kind::InvalidArgument => "invalid argument",
            Kind::FailedPrecondition => "failed precondition",
            Kind::Unavailable => "unavailable",
            Kind::OutOfRange => "out of range",
            Kind::Unauthenticated => "unauthenticated",
            Kind::ResourceExhausted => "resource exhausted",
            Kind::DeadlineExceeded => "deadline exceeded",
            Kind::Internal => "internal",
        };
        f.write_str(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}: {kind}")]
    Kind { kind: Kind, message: String },
    #[error("metadata store: {0}")]
    Store(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error::Kind {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::Kind { kind, .. } => *kind,
            Error::Store(_) => Kind::Internal,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Kind::NotFound,
                std::io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
                _ => Kind::Internal,
            },
        }
    }
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// Runs blocking work (filesystem, fsync, redb writes) off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(Kind::Internal, format!("blocking task failed: {e}")))?
}
