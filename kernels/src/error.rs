//! The crate's one error type, plus the small validation helpers every kernel uses to check
//! slice lengths against shapes (with overflow-checked shape products) before touching data.

use core::fmt;

/// An error: a shape/length disagreement or an impossible geometry.
///
/// The message names the offending value and what was expected, e.g.
/// ``"`x` has length 5, expected 6 (m=2 × k=3)"``.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelError {
    /// Human-readable description of the problem.
    pub message: String,
}

impl KernelError {
    /// Creates an error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KernelError {}

/// The product of `dims`, or an error naming `what` if it overflows `usize`.
pub(crate) fn product(what: &str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| KernelError::new(format!("shape of `{what}` {dims:?} overflows usize")))
    })
}

/// Checks that slice `name` holds a `rows × cols` matrix; `(label, value)` pairs name the
/// dimensions in the message (`"m=3 × k=4"`), and an overflowing product is an error too.
pub(crate) fn check_matrix(
    name: &str,
    len: usize,
    (rl, rows): (&str, usize),
    (cl, cols): (&str, usize),
) -> Result<(), KernelError> {
    check_len(
        name,
        len,
        product(name, &[rows, cols])?,
        format_args!("{rl}={rows} × {cl}={cols}"),
    )
}

/// Checks that slice `name` has exactly `expected` elements; `how` explains the expectation
/// (formatted only on error: pass `format_args!`, not `format!`, so that the success path of a
/// small kernel call allocates nothing).
pub(crate) fn check_len(
    name: &str,
    len: usize,
    expected: usize,
    how: impl std::fmt::Display,
) -> Result<(), KernelError> {
    if len == expected {
        Ok(())
    } else {
        Err(KernelError::new(format!(
            "`{name}` has length {len}, expected {expected} ({how})"
        )))
    }
}
