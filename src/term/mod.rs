//! The local terminal and process: diagnostics on stderr (`diag`), progress bars
//! (`progress`), a fan-out's results (`output`), terminal questions and modes (`tty`), Ctrl-C
//! (`cancel`).

pub mod cancel;
pub mod diag;
pub mod output;
pub mod progress;
pub mod tty;
