//! What the user typed and what the programs do with it: argument parsing (`args`), the
//! start-up order and exit codes (`app`), `-f`'s hand-over to a background process
//! (`background`), the shell completion scripts (`completions`), pdsh, pdcp, rpdcp and dshbak
//! by name (`pdsh`). See ARCHITECTURE.md.

pub mod app;
pub mod args;
pub mod background;
pub mod completions;
pub mod pdsh;
