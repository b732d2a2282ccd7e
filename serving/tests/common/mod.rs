//! A server of one model over a real socket on loopback, for the tests that need one (each
//! test file uses what it needs of it).
#![allow(dead_code)]

use millrace_models::{FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{serve, ModelStore, ServeOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A server of one model on a runtime of its own, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let spec = FeatureSpec::Hashed { hash_bits: 8 };
        let n = spec.dimension(&millrace_models::Schema::criteo());
        let mut artifact = ModelArtifact::logistic_regression("ctr", spec, vec![0.01; n]);
        registry.publish(&mut artifact).unwrap();
        let store = Arc::new(ModelStore::new(registry));
        store.refresh();
        Server::serve(store, options, dir)
    }

    /// A server of `store`, whose registry is in `dir`.
    pub(crate) fn serve(
        store: Arc<ModelStore>,
        options: ServeOptions,
        dir: tempfile::TempDir,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(serve(store, listener, options, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// A whole request on a new connection: the status and the body.
    pub(crate) fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A refusal may come, and the connection close, before the body is all sent.
        let _ = write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut response = String::new();
        // A connection the server closes at once (past its cap) reads as status 0.
        let _ = stream.read_to_string(&mut response);
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub(crate) fn metric(&self, name: &str) -> u64 {
        let (_, metrics) = self.request("GET", "/metrics", "");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A FeatureMap over a category (`site`), a number (`price`) and tokens (`tags`, `|`), with its
/// spec, fitted on CSV `lines` of `click,site,price,tags`.
pub(crate) fn declared_schema_map(
    lines: &[&str],
) -> (millrace_models::FeatureMapSpec, millrace_models::FeatureMap) {
    use millrace_models::fmap::{FeatureMapSpec, Parser};
    use millrace_models::{EventBatch, FeatureMap, SchemaSpec};
    let schema: SchemaSpec = toml::from_str(
        r#"format = "csv"
           fields = [
             { name = "click", type = "label" },
             { name = "site", type = "category" },
             { name = "price", type = "number" },
             { name = "tags", type = "tokens", separator = "|" },
           ]"#,
    )
    .unwrap();
    let schema = schema.compile().unwrap();
    let spec: FeatureMapSpec = toml::from_str(
        "[[transform]]\nkind = \"one_hot\"\nfields = [\"site\", \"tags\"]\n[[transform]]\nkind = \"standardize\"\nfields = [\"price\"]\n",
    )
    .unwrap();
    let layout = spec.compile(&schema).unwrap();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(3);
    for line in lines {
        parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
    }
    (spec, FeatureMap::fit(layout, std::slice::from_ref(&batch)))
}
