//! What kind of body a request carries, decided the way Rails and Rack decide it.
//!
//! - The media type is the `Content-Type` up to the first `;` or `,`, trimmed and
//!   lowercased (Rails' `content_mime_type`, Rack's `media_type`).
//! - JSON is every type Rails maps to `:json`: `application/json` and the synonyms that
//!   Rails and Mastodon (`config/initializers/mime_types.rb`) register, plus any `+json`.
//! - Multipart is any `multipart/*`; the boundary is read as Rack's `MULTIPART` regex reads
//!   it (`boundary=`, an optional quote, then everything up to `"`, `;` or `,`). Rack's
//!   released versions take the *last* `boundary=` and its newest refuses two; a type
//!   with two, with none, or with a space before the `=` is refused here, because Rack
//!   would fall back to reading such a body as a URL-encoded form.
//! - A form is `application/x-www-form-urlencoded`, or no type at all (Rack reads a POST
//!   without one as a form; pavise checks any method).
//!
//! Compressed bodies are refused: neither Rails nor Rack inflates a request body, so the
//! instance would not understand one either, and pavise will not forward bytes it has not
//! read.

use http::{HeaderMap, header};

/// How pavise reads a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Multipart {
        boundary: String,
        subtype: String,
    },
    /// A type pavise will not guess at (a `multipart/*` without one usable boundary, two
    /// `Content-Type` headers); the reason is shown to the client.
    Unreadable(&'static str),
    Json,
    Form,
    /// `image/*`, `video/*`, `audio/*`: must be a file pavise can scrub.
    DeclaredMedia,
    Other,
}

/// Every media type Rails parses as JSON in Mastodon.
const JSON_TYPES: &[&str] = &[
    "application/json",
    "text/x-json",
    "application/jsonrequest",
    "application/jrd+json",
    "application/activity+json",
    "application/ld+json",
];

/// Rack refuses longer boundaries (RFC 2046 §5.1.1 allows 70 characters).
const MAX_BOUNDARY: usize = 70;

impl BodyKind {
    pub fn of(headers: &HeaderMap) -> BodyKind {
        let mut types = headers.get_all(header::CONTENT_TYPE).iter();
        let Some(raw) = types.next().map(|v| v.as_bytes()) else {
            return BodyKind::Form;
        };
        if types.next().is_some() {
            // Puma joins repeated headers with ", ", and Rack then reads the joined text.
            return BodyKind::Unreadable("the request has more than one Content-Type");
        }
        let raw = raw.trim_ascii();
        let media_type = media_type(raw);
        if media_type.is_empty() {
            return BodyKind::Form;
        }
        if let Some(subtype) = media_type.strip_prefix("multipart/") {
            return match rack_boundary(raw) {
                Ok(boundary) => BodyKind::Multipart { boundary, subtype: subtype.to_owned() },
                Err(why) => BodyKind::Unreadable(why),
            };
        }
        if JSON_TYPES.contains(&media_type.as_str()) || media_type.ends_with("+json") {
            return BodyKind::Json;
        }
        if media_type == "application/x-www-form-urlencoded" {
            return BodyKind::Form;
        }
        if ["image/", "video/", "audio/"].iter().any(|p| media_type.starts_with(p)) {
            return BodyKind::DeclaredMedia;
        }
        BodyKind::Other
    }
}

/// The media type of a `Content-Type` value as Rails and Rack read it: up to the first `;`
/// or `,`, trimmed, lowercased (empty when there is none). The one reader of media types
/// in the crate: requests and answers alike.
pub fn media_type(raw: &[u8]) -> String {
    let raw = raw.trim_ascii();
    let end = raw.iter().position(|&b| b == b';' || b == b',').unwrap_or(raw.len());
    String::from_utf8_lossy(raw[..end].trim_ascii()).to_ascii_lowercase()
}

/// The boundary as Rack reads it, or why pavise will not read one.
fn rack_boundary(raw: &[u8]) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    let mut found = None;
    for at in memchr::memmem::find_iter(&lower, b"boundary") {
        let after = &raw[at + 8..];
        let spaces = after.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if after.get(spaces) != Some(&b'=') {
            continue;
        }
        if found.is_some() {
            return Err("the multipart Content-Type names more than one boundary");
        }
        if spaces > 0 {
            return Err("the multipart Content-Type has a space before boundary's '='");
        }
        found = Some(at + 9);
    }
    let Some(from) = found else { return Err("the multipart Content-Type names no boundary") };
    let mut value = &raw[from..];
    if value.first() == Some(&b'"') {
        value = &value[1..];
    }
    let len = value.iter().position(|b| matches!(b, b'"' | b';' | b',')).unwrap_or(value.len());
    let boundary = &value[..len];
    if boundary.is_empty() {
        return Err("the multipart boundary is empty");
    }
    if boundary.len() > MAX_BOUNDARY {
        return Err("the multipart boundary is longer than 70 characters");
    }
    String::from_utf8(boundary.to_vec()).map_err(|_| "the multipart boundary is not text")
}

/// Why a body's encoding is refused: a `Content-Encoding` other than `identity`, or a
/// transfer coding other than `chunked`.
pub fn encoding_refusal(headers: &HeaderMap) -> Option<&'static str> {
    let codings = |name| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    };
    if codings(header::CONTENT_ENCODING).iter().any(|c| c != b"identity") {
        return Some("compressed request bodies (Content-Encoding) are not accepted; send the body uncompressed");
    }
    if codings(header::TRANSFER_ENCODING).iter().any(|c| c != b"chunked" && c != b"identity") {
        return Some("transfer codings other than chunked are not accepted");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ct: &str) -> BodyKind {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        BodyKind::of(&h)
    }

    fn multipart(boundary: &str, subtype: &str) -> BodyKind {
        BodyKind::Multipart { boundary: boundary.into(), subtype: subtype.into() }
    }

    #[test]
    fn json_is_what_rails_maps_to_json() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/x-json",
            "application/jsonrequest",
            "application/activity+json",
            "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"",
            "application/jrd+json",
            "application/merge-patch+json",
            "application/json, text/plain",
        ] {
            assert_eq!(kind(ct), BodyKind::Json, "{ct}");
        }
    }

    #[test]
    fn every_multipart_subtype_with_rack_s_boundary() {
        assert_eq!(kind("multipart/form-data; boundary=abc"), multipart("abc", "form-data"));
        assert_eq!(kind("multipart/mixed; boundary=\"a b;c\""), multipart("a b", "mixed"));
        assert_eq!(kind("MULTIPART/Related;BOUNDARY=XyZ;type=x"), multipart("XyZ", "related"));
        assert_eq!(kind("multipart/alternative, boundary=q"), multipart("q", "alternative"));
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=a; x-boundary=b",
            "multipart/form-data; boundary =a",
            "multipart/form-data; boundary=\";x",
        ] {
            assert!(matches!(kind(bad), BodyKind::Unreadable(_)), "{bad}");
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(matches!(kind(&long), BodyKind::Unreadable(_)));
        let mut two = HeaderMap::new();
        two.append(header::CONTENT_TYPE, "multipart/form-data; boundary=a".parse().unwrap());
        two.append(header::CONTENT_TYPE, "multipart/form-data; boundary=b".parse().unwrap());
        assert!(matches!(BodyKind::of(&two), BodyKind::Unreadable(_)), "Rack would read the last of the joined two");
    }

    #[test]
    fn forms_media_and_the_rest() {
        assert_eq!(kind("application/x-www-form-urlencoded; charset=UTF-8"), BodyKind::Form);
        assert_eq!(kind(""), BodyKind::Form);
        assert_eq!(BodyKind::of(&HeaderMap::new()), BodyKind::Form, "no type: Rack reads a form");
        assert_eq!(kind("image/jpeg"), BodyKind::DeclaredMedia);
        assert_eq!(kind("Video/MP4"), BodyKind::DeclaredMedia);
        assert_eq!(kind("application/octet-stream"), BodyKind::Other);
        assert_eq!(kind("text/plain"), BodyKind::Other);
    }

    #[test]
    fn compressed_bodies_are_refused() {
        let with = |name: header::HeaderName, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, v.parse().unwrap());
            encoding_refusal(&h)
        };
        assert!(with(header::CONTENT_ENCODING, "gzip").is_some());
        assert!(with(header::CONTENT_ENCODING, "identity, br").is_some());
        assert!(with(header::CONTENT_ENCODING, "identity").is_none());
        assert!(with(header::TRANSFER_ENCODING, "gzip, chunked").is_some());
        assert!(with(header::TRANSFER_ENCODING, "chunked").is_none());
        assert!(encoding_refusal(&HeaderMap::new()).is_none());
    }
}
