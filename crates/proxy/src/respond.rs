//! The one place where the data plane chooses HTTP statuses. Bodies are JSON
//! `{"error":{"code","message","request_id"}}`; details go to tracing and the receipt.

use crate::body::{ProxyBody, full};
use http::{HeaderValue, Response, StatusCode, header};
use sequester_model::ErrorCode;

pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::UnknownToken | C::TokenRevoked | C::TokenExpired => StatusCode::UNAUTHORIZED,
        C::AgentDisabled
        | C::SecretRevoked
        | C::SecretExpired
        | C::HostNotAllowed
        | C::ExfiltrationBlocked
        | C::DestinationForbidden => StatusCode::FORBIDDEN,
        C::UnknownService | C::NotFound => StatusCode::NOT_FOUND,
        C::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
        C::InvalidRequest => StatusCode::BAD_REQUEST,
        C::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        C::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        C::AuditUnavailable | C::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error(code: ErrorCode, message: &str, request_id: &str) -> Response<ProxyBody> {
    let mut response = json(
        status_for(code),
        &serde_json::json!({"error": {"code": code.as_str(), "message": message, "request_id": request_id}}),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-sequester-request-id", id);
    }
    response
}
