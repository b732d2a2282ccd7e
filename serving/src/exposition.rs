//! The metrics exposition of every millrace process: a Prometheus registry (the
//! `prometheus-client` crate, the Prometheus project's own Rust library) encoded as OpenMetrics
//! when the scraper asks for it (`Accept: application/openmetrics-text`, as Prometheus does),
//! else in Prometheus' classic text format (version 0.0.4), for curl and older scrapers.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use std::sync::Arc;
use warp::{Filter, Rejection, Reply};

/// The content type of an OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The buckets of the request-latency histograms, in seconds: 50 µs to about 1.6 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(50e-6, 2.0, 16)
}

/// `millrace_build_info{version=…} 1`, registered in `registry`.
pub fn register_build_info(registry: &mut Registry) {
    let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
    registry.register(
        "millrace_build",
        "The millrace build that serves these metrics",
        info,
    );
}

/// Encodes one metric without labels as the family `name` (a counter's name ends in `_total`,
/// which the encoding adds to its samples) with its help.
///
/// # Errors
///
/// When the encoder's writer fails.
pub fn one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    metric: impl EncodeMetric,
) -> Result<(), Error> {
    metric.encode(encoder.encode_descriptor(family_name(name, &kind), help, None, kind)?)
}

/// Encodes the family `name` of one metric per label set; nothing when there are none.
///
/// # Errors
///
/// When the encoder's writer fails.
pub fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(family_name(name, &kind), help, None, kind)?;
    for (labels, sample) in samples {
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The OpenMetrics family name of a metric: a counter's without its samples' `_total`.
fn family_name<'a>(name: &'a str, kind: &MetricType) -> &'a str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// `GET /metrics`: the exposition of `registry`, in the format the scraper's `Accept` asks for.
pub(crate) fn metrics_route(
    registry: Arc<Registry>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("accept"))
        .map(move |accept: Option<String>| {
            let (text, content_type) = expose(&registry, accept.as_deref());
            warp::reply::with_header(text, "content-type", content_type)
        })
}

/// The exposition of `registry` for a scraper that sent `accept`, and its content type.
pub fn expose(registry: &Registry, accept: Option<&str>) -> (String, &'static str) {
    let mut text = String::new();
    // Writing into a String fails only when a metric's encoding does, which ours never do.
    if encode(&mut text, registry).is_err() {
        tracing::error!("encoding the metrics failed");
    }
    if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
        (text, OPENMETRICS)
    } else {
        (classic(&text), PROMETHEUS_TEXT)
    }
}

/// The classic text format of an OpenMetrics exposition: no `# UNIT` and no `# EOF` lines; a
/// counter family is named by its samples' `_total` name, an info family is a gauge named by
/// its samples' `_info` name, and an unknown one is untyped.
fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's `# HELP` comes right before its `# TYPE`: held until the type is known.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
        let (name, kind) = match kind {
            "counter" => (format!("{name}_total"), "counter"),
            "info" => (format!("{name}_info"), "gauge"),
            "unknown" => (name.to_owned(), "untyped"),
            kind => (name.to_owned(), kind),
        };
        if let Some(text) = help.take().and_then(|h| h.split_once(' ').map(|(_, t)| t)) {
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
        out.push_str(&format!("# TYPE {name} {kind}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn the_classic_format_names_families_by_their_samples() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("millrace_things", "Things done", counter);
        let gauge: Gauge = Gauge::default();
        gauge.set(7);
        registry.register("millrace_level", "A level", gauge);
        register_build_info(&mut registry);
        let (open, kind) = expose(
            &registry,
            Some("application/openmetrics-text;version=1.0.0"),
        );
        assert_eq!(kind, OPENMETRICS);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE millrace_things counter\nmillrace_things_total 3\n"),
            "{open}"
        );
        let (text, kind) = expose(&registry, None);
        assert_eq!(kind, PROMETHEUS_TEXT);
        assert_eq!(
            text,
            concat!(
                "# HELP millrace_things_total Things done.\n",
                "# TYPE millrace_things_total counter\n",
                "millrace_things_total 3\n",
                "# HELP millrace_level A level.\n",
                "# TYPE millrace_level gauge\n",
                "millrace_level 7\n",
                "# HELP millrace_build_info The millrace build that serves these metrics.\n",
                "# TYPE millrace_build_info gauge\n",
            )
            .to_owned()
                + &format!(
                    "millrace_build_info{{version=\"{}\"}} 1\n",
                    env!("CARGO_PKG_VERSION")
                )
        );
    }
}
