//! Parsers for the text a user or a system hands smssh: ssh_config(5) files, known_hosts,
//! pdsh hostlists, named host groups and scp operands. Nothing here does I/O beyond reading the files it is
//! given, and nothing here knows AWS or SSH sessions.

pub mod groups;
pub mod hostlist;
pub mod known_hosts;
pub mod operand;
pub mod pattern;
pub mod ssh_config;
