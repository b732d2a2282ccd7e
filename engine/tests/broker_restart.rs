//! The broker's process stops mid-stream and starts again: the job waits it out, reads on from
//! where it was, and learns every event exactly once.
//!
//! The broker is tansu, as in the other broker tests, but its own process here, keeping its
//! topics in an S3 store (moto's server, which `make test` starts and names in
//! `MILLRACE_TEST_S3`) instead of memory, so that records, topics and committed offsets outlive
//! the process. It is killed with SIGKILL, not shut down.

mod common;

use common::{ride_out_broker_loss, unique};
use millrace_connectors::kafka::create_topics;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker process on `addr` that keeps its topics in the test S3 store.
struct Broker {
    addr: SocketAddr,
    child: Child,
}

impl Broker {
    fn start(addr: SocketAddr) -> Broker {
        let tansu = std::env::var("MILLRACE_TANSU")
            .expect("MILLRACE_TANSU is unset: run the tests with `make test`");
        let s3 = std::env::var("MILLRACE_TEST_S3").expect(
            "MILLRACE_TEST_S3 is unset: run the tests with `make test`, which starts the store",
        );
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "s3://millrace-tests/"])
            .env("AWS_ENDPOINT", s3)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "millrace")
            .env("AWS_SECRET_ACCESS_KEY", "millrace")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { addr, child }
    }

    fn kill(&mut self) {
        self.child.kill().expect("killing tansu");
        self.child.wait().expect("reaping tansu");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_job_rides_out_a_broker_restart_and_loses_nothing() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut broker = Broker::start(addr);
    let servers = broker.addr.to_string();
    let topic = unique("restart");
    let dead = format!("{topic}-dead");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topics(&servers.as_str().into(), &[&topic, &dead], 4))
        .unwrap();
    // The broker dies, then starts again on the same address and store.
    ride_out_broker_loss(
        &servers,
        &topic,
        11,
        || broker.kill(),
        || Broker::start(addr),
    );
}
