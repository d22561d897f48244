//! The one body type every stage sees.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Errors carried inside streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Boxed, so a stage may swap the body (a scrubbed upload, a synthetic answer) without
/// changing the pipeline's types.
pub type Body = BoxBody<Bytes, BoxError>;

pub type Request = http::Request<Body>;
pub type Response = http::Response<Body>;

/// Wraps any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}
