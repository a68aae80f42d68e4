//! smssh: scp and ssh for a compute cluster whose key pair lives in AWS Secrets Manager.
//! See ARCHITECTURE.md for the map of modules.
// `deny`, not `forbid`: one audited module, key::lock, may use `unsafe` (mlock of the pages
// that hold a decoded key); nothing else may.
#![deny(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod copy;
pub mod copy_via_s3;
pub mod fanout;
pub mod key;
pub mod plan;
pub mod rotation;
pub mod shell;
pub mod ssh;
pub mod term;
