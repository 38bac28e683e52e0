//! The host's one error type.
//!
//! Every failure a caller can see — bad input, a missing or misshapen weight, a trap in
//! the sandbox, an exceeded deadline or memory limit — is an [`Error`]: a machine-readable
//! [`ErrorKind`] and a human message that names the offending value and what was expected.
//! The kinds mirror the WIT `error` variant, plus the failures only the host can observe.

use std::fmt;

/// What class of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A request, input tensor or file is malformed.
    InvalidInput,
    /// A named function, input, output or weight does not exist.
    NotFound,
    /// Shapes disagree.
    ShapeMismatch,
    /// A dtype, datatype or operation is not supported.
    Unsupported,
    /// A memory or tensor-size limit was exceeded.
    LimitExceeded,
    /// The request ran past its deadline and was interrupted.
    DeadlineExceeded,
    /// The runtime could not take the request now: the admission queue was full, or the
    /// request's deadline passed while it waited for a slot. Retrying later may succeed.
    Unavailable,
    /// The function trapped (a wasm trap or a panic inside the sandbox).
    Trap,
    /// Reading or writing a file failed.
    Io,
    /// A bug or unexpected condition.
    Internal,
}

impl ErrorKind {
    /// A short lowercase name, as used in JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotFound => "not-found",
            ErrorKind::ShapeMismatch => "shape-mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::LimitExceeded => "limit-exceeded",
            ErrorKind::DeadlineExceeded => "deadline-exceeded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Trap => "trap",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A failure with its kind and a message that says what was wrong and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::ShapeMismatch`] error.
    pub fn shape_mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ShapeMismatch, message)
    }

    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An [`ErrorKind::LimitExceeded`] error.
    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LimitExceeded, message)
    }

    /// An [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An [`ErrorKind::Io`] error about `path`.
    pub fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        Self::new(
            ErrorKind::Io,
            format!("failed to read `{}`: {err}", path.display()),
        )
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` put in front of the message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for Error {}

impl From<tensorlet_kernels::KernelError> for Error {
    fn from(err: tensorlet_kernels::KernelError) -> Self {
        Error::shape_mismatch(err.to_string())
    }
}
