//! Records to the system logger: RFC 5424 frames over a Unix datagram socket (`/dev/log`,
//! where journald and rsyslog listen), one record per datagram.
//!
//! Owns: the frame (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`) and the facility
//! names. Invariant: every header field is printable US-ASCII without spaces, or the nil
//! value `-`, so the record (the MSG) can never be mistaken for header fields. Must not know
//! what a record holds.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// RFC 5424 severities used by records.
pub const SEVERITY_WARNING: u8 = 4;
pub const SEVERITY_INFO: u8 = 6;

/// How long one send may wait for a logger whose queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A syslog facility code (RFC 5424 section 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// authpriv (10): security messages that only root may read, where sudo writes.
    pub const AUTHPRIV: Facility = Facility(10);

    /// A facility by its syslog.conf name.
    pub fn parse(name: &str) -> Option<Facility> {
        const NAMES: [&str; 12] = [
            "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
            "authpriv", "ftp",
        ];
        if let Some(code) = NAMES.iter().position(|n| *n == name) {
            return u8::try_from(code).ok().map(Facility);
        }
        let local: u8 = name.strip_prefix("local")?.parse().ok()?;
        (local <= 7 && name.len() == "local0".len()).then_some(Facility(16 + local))
    }

    pub fn code(self) -> u8 {
        self.0
    }
}

/// The header fields that are the same for every record of one process.
#[derive(Debug, Clone)]
pub struct Origin {
    pub facility: Facility,
    pub hostname: String,
    pub app_name: String,
    pub procid: u32,
}

/// The frame of one record.
pub fn frame(origin: &Origin, severity: u8, timestamp: &str, msgid: &str, message: &str) -> String {
    let pri = u16::from(origin.facility.code()) * 8 + u16::from(severity.min(7));
    format!(
        "<{pri}>1 {} {} {} {} {} - {message}",
        header_field(timestamp, 128),
        header_field(&origin.hostname, 255),
        header_field(&origin.app_name, 48),
        origin.procid,
        header_field(msgid, 32),
    )
}

/// A header field as RFC 5424 allows it: 1 to `max` printable US-ASCII characters other
/// than space, else the nil value.
fn header_field(text: &str, max: usize) -> &str {
    let printable = text.bytes().all(|b| (33..=126).contains(&b));
    if printable && !text.is_empty() && text.len() <= max {
        text
    } else {
        "-"
    }
}

/// This host's name as the kernel has it (`-` when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// A connected datagram socket to the logger.
#[derive(Debug)]
pub struct SyslogSink {
    socket: UnixDatagram,
    path: PathBuf,
    origin: Origin,
}

impl SyslogSink {
    /// Connects to the logger's socket; fails when there is none or nobody listens.
    pub fn open(path: &Path, facility: Facility, app_name: &str) -> std::io::Result<SyslogSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(SyslogSink {
            socket,
            path: path.to_path_buf(),
            origin: Origin {
                facility,
                hostname: hostname(),
                app_name: app_name.to_owned(),
                procid: std::process::id(),
            },
        })
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// Sends one record as one datagram.
    pub fn send(
        &self,
        timestamp: &str,
        severity: u8,
        msgid: &str,
        message: &str,
    ) -> std::io::Result<()> {
        let frame = frame(&self.origin, severity, timestamp, msgid, message);
        let sent = self.socket.send(frame.as_bytes())?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(std::io::Error::other("the logger took part of a record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_rfc5424() {
        let ts = "2026-11-30T14:18:51.123Z";
        let cases = [
            (
                Facility::AUTHPRIV,
                SEVERITY_INFO,
                "master",
                "smssh",
                "exec",
                "<86>1 2026-11-30T14:18:51.123Z master smssh 42 exec - {}",
            ),
            (
                Facility::AUTHPRIV,
                SEVERITY_WARNING,
                "master",
                "smscp",
                "upload",
                "<84>1 2026-11-30T14:18:51.123Z master smscp 42 upload - {}",
            ),
            (
                Facility::parse("local7").unwrap(),
                SEVERITY_INFO,
                "",
                "smssh",
                "rotation",
                "<190>1 2026-11-30T14:18:51.123Z - smssh 42 rotation - {}",
            ),
            (
                Facility::parse("kern").unwrap(),
                SEVERITY_INFO,
                "a host",
                "sm ssh",
                "authorized_keys",
                "<6>1 2026-11-30T14:18:51.123Z - - 42 authorized_keys - {}",
            ),
            (
                Facility::parse("user").unwrap(),
                SEVERITY_WARNING,
                "h\u{e9}",
                &"a".repeat(49),
                &"m".repeat(33),
                "<12>1 2026-11-30T14:18:51.123Z - - 42 - - {}",
            ),
        ];
        for (facility, severity, host, app, msgid, want) in cases {
            let origin = Origin {
                facility,
                hostname: host.to_owned(),
                app_name: app.to_owned(),
                procid: 42,
            };
            assert_eq!(frame(&origin, severity, ts, msgid, "{}"), want);
        }
    }

    #[test]
    fn facilities_parse_by_name() {
        let cases = [
            ("kern", Some(0)),
            ("user", Some(1)),
            ("auth", Some(4)),
            ("authpriv", Some(10)),
            ("local0", Some(16)),
            ("local7", Some(23)),
            ("local8", None),
            ("local07", None),
            ("security", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(Facility::parse(name).map(Facility::code), want, "{name}");
        }
    }

    #[test]
    fn records_arrive_as_one_datagram_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = SyslogSink::open(&path, Facility::AUTHPRIV, "smssh").unwrap();
        sink.send(
            "2026-01-01T00:00:00.000Z",
            SEVERITY_INFO,
            "exec",
            "{\"a\":1}",
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("<86>1 2026-01-01T00:00:00.000Z "),
            "{text}"
        );
        assert!(text.ends_with(" exec - {\"a\":1}"), "{text}");
        assert!(SyslogSink::open(&dir.path().join("none"), Facility::AUTHPRIV, "x").is_err());
    }
}
