//! One SSH connection and what runs over it: the authenticated session (`session`), remote
//! commands (`exec`), SFTP transfers (`transfer`) and port forwarding (`forward`), and a
//! command fan-out's per-host output files (`outdir`) and shared stdin (`stdin_all`), which
//! `host_io` puts around each host's command.

pub mod exec;
pub mod forward;
pub mod host_io;
pub mod outdir;
pub mod proxy;
pub mod session;
pub mod stdin_all;
pub mod transfer;
