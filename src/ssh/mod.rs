//! One SSH connection and what runs over it: the authenticated session (`session`), remote
//! commands (`exec`) and SFTP transfers (`transfer`).

pub mod exec;
pub mod session;
pub mod transfer;
