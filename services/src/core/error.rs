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
    /// A request or a client's backlog is larger than berthd keeps for anyone, or the disk
    /// (or a quota) is full.
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
    #[error("{}: {}", .message, effective(*.kind, .message))]
    Kind { kind: Kind, message: String },
    /// redb's (or a record's encoding) failure, in its words, and what redb met.
    #[error("metadata store: {message}")]
    Store { message: String, fault: StoreFault },
    /// A full disk says so in the kinds' words too, as every other kind does.
    #[error("{}: {}{}", .context, .source, exhausted_suffix(.source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a metadata store failure was, read from redb's typed error when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The disk is full (or the quota spent): an I/O error the operator frees space for.
    DiskFull,
    /// Another I/O error, or redb's refusal after one: the database must be opened again.
    Io,
    Other,
}

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

    /// The same error, saying first what was being done (`what: …`); its kind stays.
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self {
            Error::Kind { kind, message } => Error::Kind {
                kind,
                message: format!("{what}: {message}"),
            },
            Error::Store { message, fault } => Error::Store {
                message: format!("{what}: {message}"),
                fault,
            },
            Error::Io { context, source } => Error::Io {
                context: format!("{what}: {context}"),
                source,
            },
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::Kind { kind, message } => effective(*kind, message),
            Error::Store {
                fault: StoreFault::DiskFull,
                ..
            } => Kind::ResourceExhausted,
            Error::Store { .. } => Kind::Internal,
            Error::Io { source, .. } if is_out_of_space(source) => Kind::ResourceExhausted,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Kind::NotFound,
                std::io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
                _ => Kind::Internal,
            },
        }
    }
}

/// What an I/O error's message ends with: the kind when the disk is full (once).
fn exhausted_suffix(e: &std::io::Error) -> &'static str {
    if is_out_of_space(e) && !e.to_string().ends_with(": resource exhausted") {
        ": resource exhausted"
    } else {
        ""
    }
}

/// An error that a full disk caused is ResourceExhausted, whatever the layer that met it
/// called it on its way up (a layer's entry "refused", an unpack "failed"): the operator's to
/// fix by freeing space, and the client's to retry then.
fn effective(kind: Kind, message: &str) -> Kind {
    match kind {
        Kind::InvalidArgument | Kind::Internal | Kind::FailedPrecondition | Kind::Unavailable
            if message_says_full(message) =>
        {
            Kind::ResourceExhausted
        }
        k => k,
    }
}

/// Whether an I/O error says the filesystem (or the user's quota on it) is full: what an
/// operator frees space for, not a fault of berth's.
/// An error passed through a `Write` as text keeps only its words: those count too.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        Some(code) => code == libc::ENOSPC || code == libc::EDQUOT,
        None => {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || message_says_full(&e.to_string())
        }
    }
}

/// The same, from a message that carries an I/O error as text (redb's errors do).
fn message_says_full(message: &str) -> bool {
    [libc::ENOSPC, libc::EDQUOT]
        .iter()
        .any(|code| message.contains(&format!("(os error {code})")))
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::from(redb::Error::from(e))
            }
        }
    )*};
}
store_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        let fault = match &e {
            redb::Error::Io(io) if is_out_of_space(io) => StoreFault::DiskFull,
            redb::Error::Io(_) | redb::Error::PreviousIo => StoreFault::Io,
            _ => StoreFault::Other,
        };
        let message = match fault {
            StoreFault::DiskFull => format!("{e}: the metadata store's disk is full"),
            _ => e.to_string(),
        };
        Error::Store { message, fault }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Store {
            message: e.to_string(),
            fault: StoreFault::Other,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_resource_exhausted() {
        for code in [libc::ENOSPC, libc::EDQUOT] {
            let e = Error::io("write /r/blob", std::io::Error::from_raw_os_error(code));
            assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
            assert!(e.to_string().starts_with("write /r/blob: "), "{e}");
            assert!(e.to_string().ends_with(": resource exhausted"), "{e}");
        }
        let other = Error::io(
            "write /r/blob",
            std::io::Error::from_raw_os_error(libc::EIO),
        );
        assert_eq!(other.kind(), Kind::Internal);
        assert!(!other.to_string().contains("exhausted"), "{other}");
        let passed_on = std::io::Error::other(format!(
            "write ingest: {}",
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        ));
        let passed_on = Error::io("copy", passed_on);
        assert_eq!(passed_on.kind(), Kind::ResourceExhausted);
        assert!(passed_on
            .to_string()
            .ends_with("(os error 28): resource exhausted"));
        let twice = Error::io("import", std::io::Error::other(passed_on.to_string()));
        assert_eq!(
            twice.to_string().matches("resource exhausted").count(),
            1,
            "{twice}"
        );
        let full = redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = Error::from(full);
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert!(e.to_string().contains("disk is full"), "{e}");
        let e = Error::from(redb::StorageError::Corrupted("x".into()));
        assert_eq!(e.kind(), Kind::Internal);
        let fault = |e: Error| match e {
            Error::Store { fault, .. } => fault,
            other => panic!("{other}"),
        };
        assert_eq!(fault(e), StoreFault::Other);
        let eio = redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(
            fault(Error::from(redb::TableError::Storage(eio))),
            StoreFault::Io
        );
        let refused = redb::CommitError::Storage(redb::StorageError::PreviousIo);
        assert_eq!(
            fault(Error::from(refused).context("commit")),
            StoreFault::Io
        );
        // Met by a layer that called it something else on the way up.
        let refused = Error::invalid(format!(
            "layer entry \"f\" refused: write: {}",
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        ));
        assert_eq!(refused.kind(), Kind::ResourceExhausted);
        assert!(
            refused.to_string().ends_with(": resource exhausted"),
            "{refused}"
        );
        assert_eq!(Error::invalid("bad name").kind(), Kind::InvalidArgument);
        let said = refused.context("unpack layer sha256:1 into /r/s/fs");
        assert_eq!(said.kind(), Kind::ResourceExhausted);
        assert_eq!(
            said.to_string().matches("resource exhausted").count(),
            1,
            "{said}"
        );
        assert!(said
            .to_string()
            .starts_with("unpack layer sha256:1 into /r/s/fs: layer entry"));
    }
}
