//! smssh: scp and ssh for a compute cluster whose key pair lives in AWS Secrets Manager.
//! See ARCHITECTURE.md for the map of modules.
#![forbid(unsafe_code)]

pub mod aws;
pub mod cli;
pub mod config;
pub mod copy;
pub mod fanout;
pub mod key;
pub mod plan;
pub mod rotation;
pub mod ssh;
pub mod term;
