//! The server under abuse, over real sockets on loopback: slow clients that never finish their
//! headers hold nothing past the header timeout, and the server answers others meanwhile;
//! connections past the cap are closed at once; predict requests past the in-flight cap get a
//! 503 at once; and every refusal is counted.

mod common;

use common::Server;
use millrace_serving::ServeOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Whether the server closed `stream` (end of stream, a reset, or a last answer before the
/// end) within the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buffer = [0; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// As many slow connections as the file descriptor limit leaves room for (each takes two, the
/// client's and the server's), at most `want`.
fn slow_connections(want: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = usize::try_from(limit.saturating_sub(256) / 2).unwrap_or(usize::MAX);
    if room < want {
        eprintln!("the file descriptor limit {limit} leaves room for {room} slow connections");
    }
    want.min(room)
}

#[test]
fn slow_clients_hold_nothing_past_the_header_timeout() {
    let server = Server::start(ServeOptions {
        header_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    });
    let count = slow_connections(5_000);
    let mut slow: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            stream
        })
        .collect();
    let (status, _) = server.request("GET", "/healthz", "");
    assert_eq!(status, 200, "answered while {count} slow clients wait");
    let (status, _) = server.request("POST", "/v1/models/ctr:predict", r#"{"instances":[{}]}"#);
    assert_eq!(status, 200);
    for stream in &mut slow {
        assert!(
            closed_by_server(stream),
            "a slow client's connection stays open"
        );
    }
    // Only the request asking for the metrics is open once the slow ones are gone.
    let mut open = u64::MAX;
    for _ in 0..100 {
        open = server.metric("millrace_serving_connections_open");
        if open == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open, 1);
}

#[test]
fn connections_past_the_cap_are_closed_and_counted() {
    let server = Server::start(ServeOptions {
        max_connections: 4,
        header_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    });
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Connections are accepted in order: the fifth finds every slot taken.
    let mut fifth = TcpStream::connect(server.addr).unwrap();
    assert!(closed_by_server(&mut fifth));
    drop(held);
    let mut refused = 0;
    for _ in 0..100 {
        let (status, metrics) = server.request("GET", "/metrics", "");
        if status == 200 {
            refused = metrics
                .lines()
                .find_map(|l| l.strip_prefix("millrace_serving_connections_refused_total "))
                .and_then(|v| v.parse().ok())
                .unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused >= 1, "{refused}");
}

#[test]
fn predicts_past_the_in_flight_cap_get_a_503_at_once() {
    let server = Server::start(ServeOptions {
        max_in_flight: 2,
        ..ServeOptions::default()
    });
    // Two predicts whose bodies never finish arriving hold both places.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream
                .write_all(b"POST /v1/models/ctr:predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            stream
        })
        .collect();
    let mut in_flight = 0;
    for _ in 0..200 {
        in_flight = server.metric("millrace_serving_predicts_in_flight");
        if in_flight == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(in_flight, 2, "both held predicts are in flight");
    let (status, _) = server.request("POST", "/v1/models/ctr:predict", r#"{"instances":[{}]}"#);
    assert_eq!(status, 503);
    assert!(server.metric("millrace_serving_in_flight_refused_total") >= 1);
    drop(held);
    let mut status = 0;
    for _ in 0..100 {
        (status, _) = server.request("POST", "/v1/models/ctr:predict", r#"{"instances":[{}]}"#);
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 200, "the places come back");
}

/// A certificate authority and a server certificate for 127.0.0.1 signed by it, made by openssl
/// in `dir`: the CA's certificate, the server's chain and the server's key.
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let path = |name: &str| dir.join(name);
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let made = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/setup.sh --with-broker installs it)");
        assert!(made.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    [path("ca.pem"), path("cert.pem"), path("key.pem")]
}

/// GET `path` over TLS, trusting the CA certificate `ca`: the whole response.
fn https_get(addr: SocketAddr, ca: &std::path::Path, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, TcpStream::connect(addr).unwrap());
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    response
}

/// With a certificate the server speaks only TLS: a TLS client is answered, a plain-HTTP one
/// and one that never starts its handshake get nothing and are closed within the header
/// timeout.
#[test]
fn with_a_certificate_the_server_speaks_only_tls() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = certificates(dir.path());
    let server = Server::start(ServeOptions {
        tls: Some(millrace_serving::tls_config(&cert, &key).unwrap()),
        header_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    });
    let ping = https_get(server.addr, &ca, "/v1/ping");
    assert!(ping.starts_with("HTTP/1.1 200 OK"), "{ping}");
    let (status, _) = server.request("GET", "/v1/ping", "");
    assert_eq!(
        status, 0,
        "a plain-HTTP request to the TLS port is not answered"
    );
    let mut silent = TcpStream::connect(server.addr).unwrap();
    // The deadline: a connection still open after it was not closed by the server.
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the silent client is closed: {read:?}"
    );
    // Both were counted: the plain request's handshake failed, the silent one's timed out.
    let metrics = https_get(server.addr, &ca, "/metrics");
    assert!(
        metrics.contains("millrace_serving_tls_handshakes_failed_total 2"),
        "{metrics}"
    );
    // A certificate without its key is a clear error.
    let wrong = millrace_serving::tls_config(&cert, &cert).unwrap_err();
    assert!(wrong.contains("key"), "{wrong}");
}
