//! The answers every route of the API shares: a JSON `{"error": …}` with its status (the form
//! of TF Serving's and of the Open Inference Protocol's errors alike), and a 405 that names the
//! method to use.

use warp::http::StatusCode;
use warp::reply::{json, with_header, with_status, Json, WithHeader, WithStatus};
use warp::Rejection;

/// A JSON answer with its status.
pub(crate) type Answer = WithStatus<Json>;

/// A request refused: the status and the reason given.
pub(crate) type Refusal = (StatusCode, String);

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    with_status(
        json(&serde_json::json!({ "error": message.into() })),
        status,
    )
}

/// A 405 that names the method to use in `Allow`.
pub(crate) fn not_allowed(allow: &str, message: &str) -> WithHeader<Answer> {
    with_header(
        error(StatusCode::METHOD_NOT_ALLOWED, message),
        "allow",
        allow,
    )
}

/// A 400 with `message`.
pub(crate) fn bad_request(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// A 404 saying that `name` is not served.
pub(crate) fn not_served(name: &str) -> Refusal {
    (
        StatusCode::NOT_FOUND,
        format!("model `{name}` is not served (yet)"),
    )
}

/// The answer to a request no route took: 404 for an unknown path, 400 for a header a route
/// could not read, 405 for a method no route of the path takes.
pub(crate) fn recover(rejection: Rejection) -> Answer {
    if rejection.is_not_found() {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    } else if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        // Before the methods: a route that takes the method refused the request for this.
        error(
            StatusCode::BAD_REQUEST,
            format!("the header `{}` is not valid", header.name()),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    }
}
