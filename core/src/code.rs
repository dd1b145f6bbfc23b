//! The public error codes: GraphQL `extensions.code`, the `error.code` of
//! the direct-upload HTTP answers, and what the CLI matches on. One list,
//! so that the gateway, the node and the CLI cannot drift apart; each code
//! is part of the public API (`gateway/schema.graphql` documents them).

use std::fmt;
use std::str::FromStr;

/// A public error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An argument is malformed or out of range.
    BadUserInput,
    /// The HTTP request itself is malformed (not a GraphQL request).
    BadRequest,
    /// A mutation was sent with GET.
    MethodNotAllowed,
    /// Credentials are missing, wrong or expired.
    Unauthenticated,
    /// The caller is known but may not do this.
    Forbidden,
    /// The named resource does not exist.
    NotFound,
    /// Another change came first (a taken name, a stale layout epoch).
    Conflict,
    /// The upload is over the limit.
    PayloadTooLarge,
    /// Not audio in a supported format.
    UnsupportedMedia,
    /// No storage node can take the request now (no quorum, nodes down).
    Unavailable,
    /// A fault of the service; logged.
    InternalServerError,
    /// The query is nested deeper than allowed.
    QueryTooDeep,
    /// The query costs more than allowed.
    QueryTooComplex,
    /// The query does not parse.
    GraphqlParseFailed,
    /// The query does not fit the schema.
    GraphqlValidationFailed,
    /// Too many attempts (logins, registrations) from this address or at
    /// this account; try again later.
    RateLimited,
    /// The request took too long (a direct upload past its grant's expiry).
    RequestTimeout,
}

impl ErrorCode {
    /// Every code, in the order of the documentation.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadUserInput,
        ErrorCode::BadRequest,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMedia,
        ErrorCode::Unavailable,
        ErrorCode::InternalServerError,
        ErrorCode::QueryTooDeep,
        ErrorCode::QueryTooComplex,
        ErrorCode::GraphqlParseFailed,
        ErrorCode::GraphqlValidationFailed,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
    ];

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMedia => "UNSUPPORTED_MEDIA",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InternalServerError => "INTERNAL_SERVER_ERROR",
            ErrorCode::QueryTooDeep => "QUERY_TOO_DEEP",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
        }
    }

    /// The HTTP status of an answer that fails with this code alone (the
    /// direct upload, a request that could not be executed).
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadUserInput
            | ErrorCode::BadRequest
            | ErrorCode::QueryTooDeep
            | ErrorCode::QueryTooComplex
            | ErrorCode::GraphqlParseFailed
            | ErrorCode::GraphqlValidationFailed => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMedia => 415,
            ErrorCode::Unavailable => 503,
            ErrorCode::InternalServerError => 500,
            ErrorCode::RateLimited => 429,
            ErrorCode::RequestTimeout => 408,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| crate::Error::BadErrorCode(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The strings are public API: each is pinned here.
    #[test]
    fn every_code_keeps_its_string_and_status() {
        let pinned = [
            ("BAD_USER_INPUT", 400),
            ("BAD_REQUEST", 400),
            ("METHOD_NOT_ALLOWED", 405),
            ("UNAUTHENTICATED", 401),
            ("FORBIDDEN", 403),
            ("NOT_FOUND", 404),
            ("CONFLICT", 409),
            ("PAYLOAD_TOO_LARGE", 413),
            ("UNSUPPORTED_MEDIA", 415),
            ("UNAVAILABLE", 503),
            ("INTERNAL_SERVER_ERROR", 500),
            ("QUERY_TOO_DEEP", 400),
            ("QUERY_TOO_COMPLEX", 400),
            ("GRAPHQL_PARSE_FAILED", 400),
            ("GRAPHQL_VALIDATION_FAILED", 400),
            ("RATE_LIMITED", 429),
            ("REQUEST_TIMEOUT", 408),
        ];
        assert_eq!(pinned.len(), ErrorCode::ALL.len());
        for (code, (text, status)) in ErrorCode::ALL.into_iter().zip(pinned) {
            assert_eq!((code.as_str(), code.http_status()), (text, status));
            assert_eq!(text.parse::<ErrorCode>().ok(), Some(code));
        }
        assert!("TEAPOT".parse::<ErrorCode>().is_err());
    }
}
