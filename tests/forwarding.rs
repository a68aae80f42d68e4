//! Port forwarding (`-L`, `-D`, `-R`, `-N`, `-f`, `-g`, ExitOnForwardFailure) against a real
//! sshd worker, each compared with OpenSSH's own ssh doing the same forward. The far end is
//! a small TCP echo server started by the test; every wait has a deadline.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP server on 127.0.0.1 that echoes each connection's bytes back until EOF.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let port = listener.local_addr().expect("echo address").port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream;
                let mut writer = reader.try_clone().expect("clone the echo socket");
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// Connects to `addr:port`, retrying until a listener is there or [`WAIT`] has passed.
fn connect_when_listening(addr: &str, port: u16) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect((addr, port)) {
            Ok(stream) => {
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                return stream;
            }
            Err(err) if started.elapsed() > WAIT => {
                panic!("nothing listens on {addr}:{port} after {WAIT:?}: {err}")
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends `message` over `stream`, half-closes it, and returns everything read back.
fn round_trip(mut stream: TcpStream, message: &[u8]) -> Vec<u8> {
    stream
        .write_all(message)
        .expect("write through the forward");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    stream
        .read_to_end(&mut back)
        .expect("read back through the forward");
    back
}

/// Whether the far side closed `stream` without sending anything: end of file, or a reset
/// when it closed with our bytes unread. A timeout is not a close.
fn closed_without_data(mut stream: TcpStream) -> bool {
    let mut back = Vec::new();
    match stream.read_to_end(&mut back) {
        Ok(_) => back.is_empty(),
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// A SOCKS 5 CONNECT to `host:port` (a name) over `stream`; returns the reply code.
fn socks5_connect(stream: &mut TcpStream, host: &str, port: u16) -> u8 {
    stream.write_all(&[5, 1, 0]).expect("greeting");
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).expect("method choice");
    assert_eq!(choice, [5, 0], "no-authentication method chosen");
    let mut request = vec![5, 1, 0, 3, u8::try_from(host.len()).expect("short name")];
    request.extend(host.as_bytes());
    request.extend(port.to_be_bytes());
    stream.write_all(&request).expect("request");
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).expect("reply");
    reply[1]
}

/// A SOCKS 4a CONNECT to `host:port`; returns the reply code (0x5a granted).
fn socks4a_connect(stream: &mut TcpStream, host: &str, port: u16) -> u8 {
    let mut request = vec![4, 1];
    request.extend(port.to_be_bytes());
    request.extend([0, 0, 0, 1]);
    request.extend(b"user\0");
    request.extend(host.as_bytes());
    request.push(0);
    stream.write_all(&request).expect("socks4a request");
    let mut reply = [0u8; 8];
    stream.read_exact(&mut reply).expect("socks4a reply");
    reply[1]
}

/// The two clients, each with the same arguments before the destination.
fn clients(cluster: &Cluster) -> [(&'static str, Command); 2] {
    [
        ("smssh", cluster.command("smssh")),
        ("ssh", cluster.openssh("ssh")),
    ]
}

#[test]
fn local_forward_with_n_matches_openssh_and_binds_loopback_unless_gateway_ports() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    let echo = echo_server();
    for (name, mut cmd) in clients(&cluster) {
        let port = free_port(&["127.0.0.1", "127.0.0.9"]);
        let spec = format!("{port}:127.0.0.1:{echo}");
        let running = spawn(cmd.args(["-N", "-L", &spec, &worker]));
        let stream = connect_when_listening("127.0.0.1", port);
        assert_eq!(round_trip(stream, b"through -L"), b"through -L", "{name}");
        // Default GatewayPorts: loopback only, so another local address finds nothing.
        assert!(
            TcpStream::connect(("127.0.0.9", port)).is_err(),
            "{name} listens beyond 127.0.0.1 without -g"
        );
        // A target the server cannot reach closes that connection only.
        let dead = free_port(&["127.0.0.1"]);
        drop(running.kill());
        let spec = format!("{port}:127.0.0.1:{dead}");
        let mut cmd = if name == "smssh" {
            cluster.command("smssh")
        } else {
            cluster.openssh("ssh")
        };
        let running = spawn(cmd.args(["-g", "-N", "-L", &spec, &worker]));
        let mut stream = connect_when_listening("127.0.0.9", port);
        stream.write_all(b"x").expect("write through the forward");
        assert!(
            closed_without_data(stream),
            "{name}: an unreachable target gives an empty, closed connection"
        );
        let output = running.kill();
        if name == "smssh" {
            assert_stderr_contains(&output, "could not connect to 127.0.0.1 port");
        }
    }
}

#[test]
fn local_forward_lives_as_long_as_the_command_and_exit_on_forward_failure() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    let echo = echo_server();
    // The forward works while the command runs, and the command's status is smssh's.
    let port = free_port(&["127.0.0.1"]);
    let spec = format!("{port}:127.0.0.1:{echo}");
    let running = spawn(
        cluster
            .command("smssh")
            .args(["-L", &spec, &worker, "sleep 2; exit 3"]),
    );
    let stream = connect_when_listening("127.0.0.1", port);
    assert_eq!(round_trip(stream, b"during"), b"during");
    let output = running
        .wait_timeout(WAIT)
        .expect("smssh ends with its command");
    assert_exit_code(&output, 3);

    // A port already taken: a warning and the command still runs, or with
    // ExitOnForwardFailure=yes exit 255 before it runs; the same codes as ssh.
    let taken = TcpListener::bind("127.0.0.1:0").expect("take a port");
    let busy = taken.local_addr().expect("address").port();
    let spec = format!("127.0.0.1:{busy}:127.0.0.1:{echo}");
    for (name, mut cmd) in clients(&cluster) {
        let output = run(cmd.args(["-L", &spec, &worker, "echo ran"]));
        assert_exit_code(&output, 0);
        assert_eq!(stdout(&output), "ran\n", "{name}");
    }
    for (name, mut cmd) in clients(&cluster) {
        let output = run(cmd.args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &spec,
            &worker,
            "echo ran",
        ]));
        assert_exit_code(&output, 255);
        assert_eq!(stdout(&output), "", "{name} ran the command");
    }
    let output = run(cluster.command("smssh").args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &spec,
        &worker,
        "true",
    ]));
    assert_stderr_contains(&output, &format!("cannot listen on port {busy}"));
    assert_eq!(stderr(&output).lines().count(), 1, "{}", describe(&output));
    // The LocalForward keyword through -o, as ssh reads it (listen and target apart).
    let port = free_port(&["127.0.0.1"]);
    let option = format!("LocalForward={port} 127.0.0.1:{echo}");
    let running = spawn(
        cluster
            .command("smssh")
            .args(["-N", "-o", &option, &worker]),
    );
    let stream = connect_when_listening("127.0.0.1", port);
    assert_eq!(round_trip(stream, b"keyword"), b"keyword");
    drop(running.kill());
    drop(taken);
}

#[test]
fn bad_specifications_are_refused_like_openssh() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    for args in [
        &["-L", "0:a:80"][..],
        &["-L", "80"],
        &["-D", "0"],
        &["-D", "a:b:c"],
        &["-f", "-T"],
    ] {
        let mut smssh_args = args.to_vec();
        smssh_args.push(&worker);
        let ours = run(cluster.command("smssh").args(&smssh_args));
        let theirs = run(cluster.openssh("ssh").args(&smssh_args));
        assert_exit_code(&ours, 255);
        assert_exit_code(&theirs, 255);
        assert_eq!(
            stderr(&ours).lines().count(),
            1,
            "{args:?}: {}",
            describe(&ours)
        );
    }
    let output = run(cluster.command("smssh").args(["-L", "0:a:80", &worker]));
    assert_stderr_contains(&output, "Bad local forwarding specification '0:a:80'");
    let output = run(cluster.command("smssh").args(["-f", &worker]));
    assert_stderr_contains(&output, "Cannot fork into background without a command");
    // Unix-domain socket forwards are refused in one line (ssh would make them).
    let output = run(cluster
        .command("smssh")
        .args(["-N", "-L", "8080:/tmp/socket", &worker]));
    assert_exit_code(&output, 255);
    assert_stderr_contains(&output, "Unix-domain socket is not supported");
}

#[test]
fn dynamic_forward_speaks_socks_and_survives_hostile_clients() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    let echo = echo_server();
    for (name, mut cmd) in clients(&cluster) {
        let port = free_port(&["127.0.0.1"]);
        let running = spawn(cmd.args(["-N", "-D", &port.to_string(), &worker]));
        // A client that never finishes its greeting, and one that sends garbage.
        let mut stuck = connect_when_listening("127.0.0.1", port);
        stuck.write_all(&[5, 3, 0]).expect("partial greeting");
        let mut garbage = connect_when_listening("127.0.0.1", port);
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("garbage");
        assert!(
            closed_without_data(garbage),
            "{name} closes a non-SOCKS client"
        );
        // Meanwhile SOCKS 5 and SOCKS 4a clients get through.
        let mut socks5 = connect_when_listening("127.0.0.1", port);
        assert_eq!(socks5_connect(&mut socks5, "127.0.0.1", echo), 0, "{name}");
        assert_eq!(round_trip(socks5, b"socks5"), b"socks5", "{name}");
        let mut socks4 = connect_when_listening("127.0.0.1", port);
        assert_eq!(
            socks4a_connect(&mut socks4, "127.0.0.1", echo),
            0x5a,
            "{name}"
        );
        assert_eq!(round_trip(socks4, b"socks4a"), b"socks4a", "{name}");
        drop(stuck);
        drop(running.kill());
    }
    // curl, a SOCKS client we did not write, through smssh's -D to a worker's sshd banner.
    let port = free_port(&["127.0.0.1"]);
    let running = spawn(
        cluster
            .command("smssh")
            .args(["-N", "-D", &port.to_string(), &worker]),
    );
    drop(connect_when_listening("127.0.0.1", port));
    let output = run(Command::new("curl").stdin(Stdio::null()).args([
        "-sS",
        "--max-time",
        "5",
        "--socks5-hostname",
        &format!("127.0.0.1:{port}"),
        &format!("telnet://{worker}:{}", cluster.port),
    ]));
    assert!(
        stdout(&output).starts_with("SSH-2.0-"),
        "curl through -D: {}",
        describe(&output)
    );
    drop(running.kill());
}

#[test]
fn remote_forward_reaches_this_side_from_the_worker() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    let echo = echo_server();
    // bash's /dev/tcp on the worker, through the remote port, to the echo server here.
    let probe = |port: u16| {
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf remote >&3 && timeout 10 head -c 6 <&3"
        )
    };
    for (name, mut cmd) in clients(&cluster) {
        let port = free_port(&["127.0.0.1"]);
        let spec = format!("{port}:127.0.0.1:{echo}");
        let running = spawn(cmd.args(["-N", "-R", &spec, &worker]));
        let started = Instant::now();
        let output = loop {
            let output = run(cluster.command("smssh").args([
                &worker,
                "bash",
                "-c",
                &format!("'{}'", probe(port)),
            ]));
            if output.status.success() || started.elapsed() > WAIT {
                break output;
            }
            thread::sleep(Duration::from_millis(200));
        };
        assert_success(&output);
        assert_eq!(stdout(&output), "remote", "{name}");
        drop(running.kill());
    }
    // Port 0: the server picks the port, and smssh says which, as ssh does.
    let mut running =
        spawn(
            cluster
                .command("smssh")
                .args(["-N", "-R", &format!("0:127.0.0.1:{echo}"), &worker]),
        );
    // Waits for the line itself rather than a guessed time, which a loaded machine overran.
    running.stderr_shows("for remote forward to", WAIT);
    let output = running.kill();
    assert_stderr_contains(&output, "Allocated port ");
    assert_stderr_contains(&output, &format!("for remote forward to 127.0.0.1:{echo}"));
}

/// The processes named `name` that are not this test's children (the other tests' clients
/// are): the ones left in the background.
fn detached(name: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, parent, command)| command == name && *parent != std::process::id())
        .map(|(pid, _, _)| pid)
        .collect()
}

#[test]
fn fork_after_authentication_returns_once_the_forward_listens() {
    let cluster = Cluster::new(1);
    let worker = cluster.workers[0].addr().to_owned();
    let echo = echo_server();
    let logs = tempfile::tempdir().expect("log dir");
    for (name, mut cmd) in clients(&cluster) {
        let before = detached(name);
        let port = free_port(&["127.0.0.1"]);
        let spec = format!("{port}:127.0.0.1:{echo}");
        let log = logs.path().join(name);
        let file = std::fs::File::create(&log).expect("log file");
        // The background process keeps stdout and stderr, so they go to a file that the
        // test does not wait on.
        let output: Output = cmd
            .args(["-f", "-N", "-L", &spec, &worker])
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start")
            .wait_with_output()
            .expect("wait");
        assert_exit_code(&output, 0);
        // The listener is there as soon as the foreground process has returned.
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("{name} -f returned before listening: {err}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        assert_eq!(round_trip(stream, b"background"), b"background", "{name}");
        let started: Vec<u32> = detached(name)
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .collect();
        assert_eq!(started.len(), 1, "{name}: one background process");
        let status = Command::new("kill")
            .arg(started[0].to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }
    // A login that fails is reported by the foreground process with ssh's status.
    let output = run(cluster
        .command("smssh")
        .args(["-f", "-N", "-p", "1", &worker]));
    assert_exit_code(&output, 255);
}
