//! The local terminal and process: diagnostics on stderr (`diag`), escaping of everything we
//! print (`escape`), progress bars (`progress`), a fan-out's results (`output`) and its live
//! view (`live`), terminal questions and modes (`tty`), Ctrl-C (`cancel`).

pub mod cancel;
pub mod diag;
pub mod escape;
pub mod live;
pub mod output;
pub mod progress;
pub mod tty;
