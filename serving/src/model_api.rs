//! The routes about one model, in both dialects: TF Serving's under `/v1/models/{name}…` and
//! the Open Inference Protocol's under `/v2…`. Each path is parsed once into what it asks for;
//! a predict or an infer takes a place among the requests in flight, receives its body within
//! the limits, and is scored by [`crate::predict`].

use crate::batch::Batcher;
use crate::body::receive;
use crate::columns;
use crate::oip::{self, V2Path};
use crate::options::{ServeOptions, KEY_HEADER};
use crate::predict::{self, Pick, Request, Scored, Slot};
use crate::reply::{bad_request, error, not_allowed, Refusal};
use crate::store::ModelStore;
use crate::tfs::{self, Form, ModelPath, Predict};
use bytes::Buf;
use futures_util::Stream;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use warp::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{json, with_status, Response};
use warp::Reply;

/// A path of the model routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApiPath {
    /// Under `/v1/models/`.
    V1(ModelPath),
    /// `/v2` and under it.
    V2(V2Path),
}

impl ApiPath {
    /// The model route `path` is; `None` for another path.
    pub(crate) fn parse(path: &str) -> Option<ApiPath> {
        if let Some(tail) = path.strip_prefix("/v1/models/") {
            return ModelPath::parse(tail).map(ApiPath::V1);
        }
        match path.strip_prefix("/v2") {
            Some(tail) if tail.is_empty() || tail.starts_with('/') => {
                V2Path::parse(tail).map(ApiPath::V2)
            }
            _ => None,
        }
    }

    /// The method the path takes.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            ApiPath::V1(path) => path.method(),
            ApiPath::V2(path) => path.method(),
        }
    }
}

/// What the model routes need: the models, the options and the batcher.
#[derive(Clone)]
pub(crate) struct ModelApi {
    /// The models.
    pub(crate) store: Arc<ModelStore>,
    /// The server's options.
    pub(crate) options: ServeOptions,
    /// The dynamic batcher, when batching.
    pub(crate) batcher: Option<Batcher>,
}

/// The dialect of a predict request.
enum Dialect {
    /// TF Serving's `:predict`.
    TfServing,
    /// The Open Inference Protocol's `infer`.
    Oip,
}

impl ModelApi {
    /// Answers a request for `path`.
    pub(crate) async fn answer(
        self,
        path: ApiPath,
        method: Method,
        headers: HeaderMap,
        body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    ) -> Response {
        let allow = path.method();
        if method.as_str() != allow {
            self.count_refusal(StatusCode::METHOD_NOT_ALLOWED);
            return not_allowed(allow, &format!("this path takes {allow}")).into_response();
        }
        let answered = match path {
            ApiPath::V1(ModelPath::Predict { name, pick }) => {
                return self
                    .predict(&headers, body, &name, pick, Dialect::TfServing)
                    .await
            }
            ApiPath::V2(V2Path::Infer(name, version)) => {
                let pick = oip::pick(version);
                return self
                    .predict(&headers, body, &name, pick, Dialect::Oip)
                    .await;
            }
            ApiPath::V1(ModelPath::Status { name, pick }) => {
                tfs::status(&self.store, &name, pick.as_ref()).map(ok_json)
            }
            ApiPath::V1(ModelPath::Metadata { name, pick }) => {
                tfs::metadata(&self.store, &name, pick.as_ref()).map(ok_json)
            }
            ApiPath::V2(V2Path::Server) => Ok(ok_json(oip::server_metadata())),
            ApiPath::V2(V2Path::Live) => Ok(StatusCode::OK.into_response()),
            // Not a client's fault: an orchestrator's probe, not counted.
            ApiPath::V2(V2Path::Ready) if self.store.entries().is_empty() => {
                let not_yet = error(StatusCode::BAD_REQUEST, "no model loaded yet");
                return not_yet.into_response();
            }
            ApiPath::V2(V2Path::Ready) => Ok(StatusCode::OK.into_response()),
            ApiPath::V2(V2Path::Model(name, version)) => {
                let pick = version.map(Pick::Version);
                tfs::picked(&self.store, &name, pick.as_ref())
                    .and_then(|v| oip::model_metadata(&self.store, &name, &v))
                    .map(ok_json)
            }
            ApiPath::V2(V2Path::ModelReady(name, version)) => {
                predict::route(&self.store, &name, &oip::pick(version), None)
                    .map(|_| StatusCode::OK.into_response())
            }
        };
        answered.unwrap_or_else(|refusal| self.refuse(refusal))
    }

    /// Counts a refusal that is the client's fault.
    fn count_refusal(&self, status: StatusCode) {
        if status.is_client_error() {
            let stats = self.store.stats();
            stats.client_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answer to a refused request, counted.
    fn refuse(&self, (status, message): Refusal) -> Response {
        self.count_refusal(status);
        error(status, message).into_response()
    }

    /// Answers a predict or infer request: a place among those in flight, the body within
    /// its limits, then the scoring.
    async fn predict(
        &self,
        headers: &HeaderMap,
        body: impl Stream<Item = Result<impl Buf, warp::Error>>,
        name: &str,
        pick: Pick,
        dialect: Dialect,
    ) -> Response {
        let started = Instant::now();
        let (store, options) = (&self.store, &self.options);
        let Some(slot) = Slot::take(store, |s| &s.predicts_in_flight, options.max_in_flight) else {
            store
                .stats()
                .in_flight_refused
                .fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} predict requests are in flight, the most this server takes; retry later",
                    options.max_in_flight
                ),
            )
            .into_response();
        };
        let length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|n| n > options.max_body_bytes) {
            let too_large = (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".into(),
            );
            return self.refuse(too_large);
        }
        let body = match receive(store, options, body, options.max_body_bytes).await {
            Ok(body) => body,
            Err(answer) => return answer.into_response(),
        };
        let request = (slot, started);
        let scored = self
            .score(request, headers, &body, name, pick, dialect)
            .await;
        scored.unwrap_or_else(|refusal| self.refuse(refusal))
    }

    /// Reads a predict body in its dialect, scores it and answers in the same dialect; the
    /// time since the request's arrival (`started`) is observed on the version that answered.
    async fn score(
        &self,
        (slot, started): (Slot, Instant),
        headers: &HeaderMap,
        body: &[u8],
        name: &str,
        pick: Pick,
        dialect: Dialect,
    ) -> Result<Response, Refusal> {
        let key = header(headers, KEY_HEADER)?;
        let route = predict::route(&self.store, name, &pick, key)?;
        let answering = route.answer.clone();
        let observe = |answer: Response| {
            let latency = &answering.stats.latency;
            latency.observe(started.elapsed().as_secs_f64());
            answer
        };
        let request = Request {
            store: &self.store,
            slot,
            options: &self.options,
            batcher: self.batcher.as_ref(),
        };
        match dialect {
            Dialect::TfServing => {
                let (instances, form) = match tfs::read(body)? {
                    Predict::Rows(instances) => (instances, Form::Rows),
                    Predict::Columns(columns) => {
                        columns::check_fields(&columns, &route.answer)?;
                        let max = self.options.max_batch;
                        (columns::instances(&columns, max)?, Form::Columns)
                    }
                };
                predict::check_count(instances.len(), &self.options)?;
                let scored = request.score(route, instances).await?;
                self.count_answered(&scored);
                Ok(observe(ok_json(tfs::answer(scored, form))))
            }
            Dialect::Oip => {
                let header_length = header(headers, oip::HEADER_LENGTH)?;
                let fields = |name: &str| route.answer.field_type(name);
                let max = self.options.max_batch;
                let (infer, instances) =
                    oip::read_infer_instances(body, header_length, (&fields, max))?;
                predict::check_count(instances.len(), &self.options)?;
                let scored = request.score(route, instances).await?;
                self.count_answered(&scored);
                Ok(observe(infer_answer(infer.answer(&scored))))
            }
        }
    }

    /// Counts an answered predict request.
    fn count_answered(&self, scored: &Scored) {
        let stats = self.store.stats();
        stats.predict_requests.fetch_add(1, Ordering::Relaxed);
        let n = scored.predictions.len() as u64;
        stats.predictions.fetch_add(n, Ordering::Relaxed);
    }
}

/// A header's text; a 400 when it is not text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| bad_request(format!("the header `{name}` is not valid")))
        })
        .transpose()
}

/// A 200 with a JSON body.
fn ok_json(value: Value) -> Response {
    with_status(json(&value), StatusCode::OK).into_response()
}

/// An `infer` answer: JSON alone, or the JSON header and the binary output after it.
fn infer_answer((header, binary): (Value, Vec<u8>)) -> Response {
    if binary.is_empty() {
        return ok_json(header);
    }
    let mut body = header.to_string().into_bytes();
    let length = body.len();
    body.extend_from_slice(&binary);
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        "application/octet-stream".parse().expect("a valid header"),
    );
    headers.insert(oip::HEADER_LENGTH, length.into());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_both_dialects() {
        assert!(matches!(
            ApiPath::parse("/v1/models/ctr:predict"),
            Some(ApiPath::V1(_))
        ));
        assert_eq!(ApiPath::parse("/v2"), Some(ApiPath::V2(V2Path::Server)));
        assert!(matches!(
            ApiPath::parse("/v2/health/live"),
            Some(ApiPath::V2(_))
        ));
        for other in [
            "/v1/models",
            "/v1/models/",
            "/v2x",
            "/v1/ping",
            "/v2/models",
        ] {
            assert_eq!(ApiPath::parse(other), None, "{other}");
        }
        assert_eq!(
            ApiPath::parse("/v2/models/ctr/infer").unwrap().method(),
            "POST"
        );
    }
}
