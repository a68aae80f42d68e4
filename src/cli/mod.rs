//! What the user typed and what the programs do with it: argument parsing (`args`), the
//! start-up order and exit codes (`app`). See ARCHITECTURE.md.

pub mod app;
pub mod args;
