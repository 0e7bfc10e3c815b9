//! The shim's one error type, and its one mapping to the ttrpc (gRPC) status codes the daemon
//! maps back to its own error kinds.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(m: impl Into<String>) -> Self {
        Error::InvalidArgument(m.into())
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Error::NotFound(m.into())
    }
    pub fn already_exists(m: impl Into<String>) -> Self {
        Error::AlreadyExists(m.into())
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Error::FailedPrecondition(m.into())
    }
    pub fn unimplemented(m: impl Into<String>) -> Self {
        Error::Unimplemented(m.into())
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Error::Internal(m.into())
    }

    /// The status code on the wire.
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => 3,
            Error::NotFound(_) => 5,
            Error::AlreadyExists(_) => 6,
            Error::FailedPrecondition(_) => 9,
            Error::Unimplemented(_) => 12,
            Error::Internal(_) => 13,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grpc_codes() {
        assert_eq!(Error::invalid("x").code(), 3);
        assert_eq!(Error::not_found("x").code(), 5);
        assert_eq!(Error::already_exists("x").code(), 6);
        assert_eq!(Error::precondition("x").code(), 9);
        assert_eq!(Error::unimplemented("x").code(), 12);
        assert_eq!(Error::internal("x").code(), 13);
        assert_eq!(Error::invalid("bad id").to_string(), "bad id");
    }
}
