//! Names read from files (keys, tensor names, architectures) shown in messages without
//! the control characters or raw bytes a corrupt or hostile file may put in them.

use std::fmt;

/// Displays a string with its control characters escaped (`\u{1b}`, `\n`, `\0`), so a
/// name read from a file cannot move the cursor, clear the terminal or split a log line.
/// Other characters, quotes included, are shown as they are.
///
/// ```
/// use cardinfer_core::Printable;
/// assert_eq!(Printable("blk.0\u{1b}[2J").to_string(), "blk.0\\u{1b}[2J");
/// assert_eq!(Printable("token_embd.weight").to_string(), "token_embd.weight");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}
