//! smssh: scp and ssh for a compute cluster whose key pair lives in AWS Secrets Manager.
//! See ARCHITECTURE.md for the map of modules.
#![forbid(unsafe_code)]

pub mod app;
pub mod args;
pub mod aws;
pub mod cancel;
pub mod copy;
pub mod diag;
pub mod ec2;
pub mod exec;
pub mod fanout;
pub mod hardening;
pub mod hostlist;
pub mod key;
pub mod keysource;
pub mod known_hosts;
pub mod operand;
pub mod plan;
pub mod progress;
pub mod rotation;
pub mod secret;
pub mod session;
pub mod ssh_config;
pub mod targets;
pub mod transfer;
pub mod tty;
