//! The admin endpoints, `/v1/admin/models/{name}/{action}`: pin, unpin, promote, rollback and
//! traffic (an A/B split and a shadow), behind a bearer token compared in constant time.

use crate::options::ServeOptions;
use crate::reply::{error, not_allowed, Refusal};
use crate::status::ModelStatus;
use crate::store::{AdminError, ModelStore};
use crate::traffic::{Arm, TrafficChange, VersionRef};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::{json, with_status, Response};
use warp::Reply;

/// The largest admin request body.
pub(crate) const MAX_ADMIN_BODY: u64 = 64 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    /// Another served model, whose version is promoted into this model's traffic.
    #[serde(default)]
    model: Option<String>,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficBody {
    #[serde(default)]
    split: Vec<Arm>,
    #[serde(default)]
    shadow: Option<serde_json::Value>,
}

/// The shadow of a traffic change: a version number of the model itself, or
/// `{"model": …, "version": …}` of another served model.
fn shadow_of(value: serde_json::Value) -> Result<VersionRef, Refusal> {
    if let Some(version) = value.as_u64() {
        return Ok(VersionRef::Own(version));
    }
    serde_json::from_value::<VersionBody>(value)
        .map(|body| VersionRef::of(body.model, body.version))
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("invalid `shadow`: a version number, or {{\"model\": …, \"version\": …}} of another model ({e})"),
            )
        })
}

/// Whether `given` (an `Authorization` header) carries `token`, compared in constant time.
fn authorized(token: &str, given: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(given) = given.and_then(|g| g.strip_prefix("Bearer ")) else {
        return false;
    };
    // Equal-length digests compared in constant time: the time taken tells nothing of where
    // the tokens differ, nor of the expected token's length.
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// The method an admin action takes; `None` for an unknown action.
fn admin_method(action: &str) -> Option<Method> {
    match action {
        "traffic" => Some(Method::PUT),
        "pin" | "unpin" | "promote" | "rollback" => Some(Method::POST),
        _ => None,
    }
}

fn traffic_change(action: &str, body: &[u8]) -> Result<TrafficChange, Refusal> {
    let parse = |body: &[u8]| -> Result<_, Refusal> {
        serde_json::from_slice::<VersionBody>(body)
            .map(|b| VersionRef::of(b.model, b.version))
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                )
            })
    };
    let empty = |body: &[u8]| -> Result<(), Refusal> {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if blank
            || serde_json::from_slice::<serde_json::Map<_, _>>(body).is_ok_and(|m| m.is_empty())
        {
            Ok(())
        } else {
            Err((
                StatusCode::BAD_REQUEST,
                format!("`{action}` takes no body (or `{{}}`)"),
            ))
        }
    };
    Ok(match action {
        "pin" => match parse(body)? {
            VersionRef::Own(version) => TrafficChange::Pin(version),
            VersionRef::Of { .. } => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "`pin` takes a version of the model itself; `promote` or a split gives another model's version the traffic".to_owned(),
                ))
            }
        },
        "promote" => TrafficChange::Promote(parse(body)?),
        "unpin" => {
            empty(body)?;
            TrafficChange::Unpin
        }
        "rollback" => {
            empty(body)?;
            TrafficChange::Rollback
        }
        _ => {
            let traffic: TrafficBody = serde_json::from_slice(body).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                )
            })?;
            TrafficChange::Split {
                split: traffic.split,
                shadow: traffic.shadow.map(shadow_of).transpose()?,
            }
        }
    })
}

/// Answers an admin request: checks the action, the method and the token, then changes the
/// model's traffic and answers its status.
pub(crate) async fn admin(
    store: Arc<ModelStore>,
    options: ServeOptions,
    name: String,
    action: String,
    method: Method,
    authorization: Option<String>,
    body: Vec<u8>,
) -> Response {
    let refuse = |status, message: String| {
        store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        error(status, message).into_response()
    };
    let Some(expected) = admin_method(&action) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no admin action `{action}` (pin, unpin, traffic, promote, rollback)"),
        );
    };
    if method != expected {
        return not_allowed(expected.as_str(), &format!("`{action}` takes {expected}"))
            .into_response();
    }
    let Some(token) = &options.admin_token else {
        return refuse(
            StatusCode::FORBIDDEN,
            "the admin endpoints are disabled: start the server with an admin token".to_owned(),
        );
    };
    if !authorized(token, authorization.as_deref()) {
        store.stats().unauthorized.fetch_add(1, Ordering::Relaxed);
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the admin endpoints need `Authorization: Bearer <token>`".to_owned(),
        );
    }
    let change = match traffic_change(&action, &body) {
        Ok(change) => change,
        Err((status, message)) => return refuse(status, message),
    };
    let changed = {
        let store = store.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || store.change_traffic(&name, change)).await
    };
    match changed {
        Ok(Ok(_)) => match store.entry(&name).as_deref().and_then(ModelStatus::of) {
            Some(status) => with_status(json(&status), StatusCode::OK).into_response(),
            None => refuse(
                StatusCode::NOT_FOUND,
                format!("model `{name}` is not served"),
            ),
        },
        Ok(Err(refused)) => {
            let status = match refused {
                AdminError::UnknownModel(_) | AdminError::UnknownVersion(..) => {
                    StatusCode::NOT_FOUND
                }
                AdminError::Rejected(..) => StatusCode::UNPROCESSABLE_ENTITY,
                AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
                AdminError::NoOlderVersion(_) => StatusCode::CONFLICT,
            };
            refuse(status, refused.to_string())
        }
        Err(join) => {
            tracing::error!(%join, "admin task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the change failed; nothing changed",
            )
            .into_response()
        }
    }
}
