//! One SSH connection and what runs over it: the authenticated session (`session`), remote
//! commands (`exec`), SFTP transfers (`transfer`) and port forwarding (`forward`).

pub mod exec;
pub mod forward;
pub mod proxy;
pub mod session;
pub mod transfer;
