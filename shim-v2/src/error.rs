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

/// How a folded failure begins, and what follows the executable's name in each.
const EXECUTABLE: &str = "executable \"";
const NOT_FOUND: &str = "\" not found in ";
const CANNOT_RUN: &str = "\" cannot be run: ";

/// A runtime's account of a failed create or exec (libcontainer's chain of wrapped errors,
/// or runc's log), said once in words when the cause is the container's command: missing
/// (`executable "hi" not found in the image's PATH (/bin:/usr/bin)`) or not runnable.
/// `process` is the OCI process the runtime was given. The container's missing command is
/// NotFound, its unrunnable one InvalidArgument; anything else comes back as it was, Internal.
pub fn fold(raw: &str, process: &serde_json::Value) -> Error {
    let Some(arg0) = process["args"][0].as_str() else {
        return Error::internal(raw);
    };
    let path = process["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix("PATH="))
        .next()
        .unwrap_or("");
    let quoted = |q: char| format!("{q}{arg0}{q}");
    let names_it = raw.contains(&quoted('\'')) || raw.contains(&quoted('"'));
    if !names_it {
        return Error::internal(raw);
    }
    // libcontainer: "executable 'X' not found in $PATH"; runc: `exec: "X": executable file
    // not found in $PATH`, or for a path `exec: "/x": stat /x: no such file or directory`.
    let missing = raw.contains("not found in $PATH")
        || raw.contains("executable file not found")
        || raw.contains(&format!("stat {arg0}: no such file or directory"));
    if missing {
        return Error::NotFound(if arg0.contains('/') {
            format!("{EXECUTABLE}{arg0}{NOT_FOUND}the container")
        } else {
            format!("{EXECUTABLE}{arg0}{NOT_FOUND}the image's PATH ({path})")
        });
    }
    // libcontainer: "executable 'X' at path … does not have correct permissions"; runc:
    // `exec: "X": permission denied` (or is a directory, or not a program).
    let why = if raw.contains("does not have correct permissions") {
        Some("it is not executable")
    } else {
        [
            ("permission denied", "permission denied"),
            ("is a directory", "it is a directory"),
            ("exec format error", "it is not a program for this machine"),
        ]
        .into_iter()
        .find(|(said, _)| raw.contains(&format!("{}: {said}", quoted('"'))))
        .map(|(_, why)| why)
    };
    match why {
        Some(why) => Error::InvalidArgument(format!("{EXECUTABLE}{arg0}{CANNOT_RUN}{why}")),
        None => Error::internal(raw),
    }
}

/// The process section of the spec in `bundle` (its config.json), Null when unreadable.
pub fn bundle_process(bundle: &std::path::Path) -> serde_json::Value {
    read_json(&bundle.join("config.json"))["process"].take()
}

/// A JSON file (an exec's process spec), Null when unreadable.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(arg0: &str) -> serde_json::Value {
        serde_json::json!({"args": [arg0], "env": ["HOME=/", "PATH=/bin:/usr/bin"]})
    }

    #[test]
    fn libcontainers_chain_folds_to_one_cause() {
        let raw = "create container c: failed to create container: exec process failed with \
            error error in executing process : executable 'hi' not found in $PATH (executable \
            for container process not found in PATH executable=\"hi\"; failed to initialize \
            container process: executable 'hi' not found in $PATH; failed to wait for init ready)";
        let folded = fold(raw, &process("hi"));
        assert_eq!(
            folded.to_string(),
            "executable \"hi\" not found in the image's PATH (/bin:/usr/bin)"
        );
        assert!(matches!(folded, Error::NotFound(_)));
        let raw =
            "executable '/etc/passwd' at path '\"/etc/passwd\"' does not have correct permissions";
        let folded = fold(raw, &process("/etc/passwd"));
        assert_eq!(
            folded.to_string(),
            "executable \"/etc/passwd\" cannot be run: it is not executable"
        );
        assert!(matches!(folded, Error::InvalidArgument(_)));
    }

    #[test]
    fn runcs_log_folds_to_one_cause() {
        let raw = "runc create failed (exit 1): runc create failed: unable to start container \
            process: exec: \"hi\": executable file not found in $PATH";
        assert_eq!(
            fold(raw, &process("hi")).to_string(),
            "executable \"hi\" not found in the image's PATH (/bin:/usr/bin)"
        );
        let raw = "runc create failed (exit 1): unable to start container process: exec: \
            \"/nosuch\": stat /nosuch: no such file or directory";
        assert_eq!(
            fold(raw, &process("/nosuch")).to_string(),
            "executable \"/nosuch\" not found in the container"
        );
        let raw = "runc create failed (exit 1): exec: \"/etc\": is a directory";
        assert_eq!(
            fold(raw, &process("/etc")).to_string(),
            "executable \"/etc\" cannot be run: it is a directory"
        );
    }

    #[test]
    fn other_failures_stay_as_they_were_and_internal() {
        let raw = "runc create failed (exit 1): mount /proc: permission denied";
        let folded = fold(raw, &process("sh"));
        assert_eq!(folded.to_string(), raw);
        assert!(matches!(folded, Error::Internal(_)));
        let folded = fold("anything", &serde_json::Value::Null);
        assert_eq!(folded.to_string(), "anything");
        assert!(matches!(folded, Error::Internal(_)));
    }

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
