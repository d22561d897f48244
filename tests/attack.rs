//! Privacy under attack (issue 10): every upload shape, header spelling and listener an
//! attacker would try, sent through pavise to a recording upstream. exiftool, reading what
//! the upstream received, is the oracle: no location, no make or model, no capture time,
//! no planted marker may arrive, in any shape. The plain shapes (a multipart file, a JSON
//! `data:` URI) must be forwarded, not refused; what cannot be read with certainty must be
//! refused with nothing forwarded at all.
//!
//! Fixtures are made at test time (ImageMagick, ffmpeg, exiftool) once for the module.

use std::{path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    media::{contains, exiftool, location_tags, pavise_bin, run, shared_dir},
    support::{Pavise, Recorded, RecordingUpstream, send_from},
};

/// Planted in the fixtures; none may reach the upstream in any form.
const MARKERS: &[&[u8]] = &[b"Paris", b"48.8584", b"PaviseCam", b"Marker-X1", b"Lavf", b"VID_PARIS"];

/// The capture time planted in the videos, as exiftool prints it.
const CAPTURE_DAY: &str = "2024:06:04";

struct Fixtures {
    _dir: tempfile::TempDir,
    jpeg: Vec<u8>,
    mp4: Vec<u8>,
    webm: Vec<u8>,
}

fn fixtures() -> &'static Fixtures {
    static FX: OnceLock<Fixtures> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        run(Command::new("convert").args(["-size", "64x48", "gradient:red-blue", "-quality", "90"]).arg(p("a.jpg")));
        let ff = |args: &[&str], out: &str| {
            run(Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).arg(p(out)));
        };
        let src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1"];
        let when = ["-metadata", "creation_time=2024-06-04T14:02:00Z"];
        ff(&[&src[..], &["-c:v", "libx264", "-pix_fmt", "yuv420p"], &when].concat(), "a.mp4");
        ff(&[&src[..], &["-c:v", "libvpx", "-metadata", "title=VID_PARIS_0001.webm"], &when].concat(), "a.webm");
        run(Command::new("exiftool")
            .args([
                "-q",
                "-overwrite_original",
                "-EXIF:GPSLatitude=48.8584",
                "-EXIF:GPSLatitudeRef=N",
                "-EXIF:GPSLongitude=2.2945",
                "-EXIF:GPSLongitudeRef=E",
                "-EXIF:Make=PaviseCam",
                "-EXIF:Model=Marker-X1",
                "-XMP-photoshop:City=Paris",
                "-IPTC:City=Paris",
            ])
            .arg(p("a.jpg")));
        let jpeg = std::fs::read(p("a.jpg")).unwrap();
        let mp4 = with_free_boxes(std::fs::read(p("a.mp4")).unwrap());
        let webm = title_to_segment_filename(std::fs::read(p("a.webm")).unwrap());
        Fixtures { _dir: dir, jpeg, mp4, webm }
    })
}

/// The issue's crafted MP4: a `©xyz` location inside a `free` box (as the last child of
/// `moov`, which ffmpeg writes after `mdat`, so no chunk offset moves) and another at the
/// end of the file.
fn with_free_boxes(mut mp4: Vec<u8>) -> Vec<u8> {
    let bx = |kind: &[u8], body: &[u8]| [&((body.len() + 8) as u32).to_be_bytes()[..], kind, body].concat();
    let free = bx(b"free", &bx(b"\xa9xyz", b"+48.8584+002.2945/"));
    let moov = mp4.windows(4).rposition(|w| w == b"moov").unwrap() - 4;
    let size = u32::from_be_bytes(mp4[moov..moov + 4].try_into().unwrap()) as usize;
    assert_eq!(moov + size, mp4.len(), "ffmpeg writes moov last");
    mp4[moov..moov + 4].copy_from_slice(&((size + free.len()) as u32).to_be_bytes());
    mp4.extend_from_slice(&free);
    mp4.extend(bx(b"skip", b"SEFT LocationName=Paris"));
    mp4
}

/// ffmpeg writes no SegmentFilename; its Title element (`7B A9`) becomes one (`73 84`),
/// same length, in place: what mkvmerge and phone recorders write.
fn title_to_segment_filename(mut webm: Vec<u8>) -> Vec<u8> {
    let at = webm.windows(2).position(|w| w == [0x7B, 0xA9]).expect("ffmpeg wrote a Title");
    webm[at..at + 2].copy_from_slice(&[0x73, 0x84]);
    webm
}

/// What arrived upstream, checked for markers at once and read by one exiftool process at
/// the end (one process per file would cost seconds): no location, no marker, no capture
/// time, no make or model.
struct Oracle {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

impl Oracle {
    fn new() -> Oracle {
        Oracle { dir: tempfile::tempdir().unwrap(), files: Vec::new() }
    }

    fn clean(&mut self, bytes: &[u8], name: &str) {
        for m in MARKERS {
            assert!(!contains(bytes, m), "{name}: {:?} arrived upstream", String::from_utf8_lossy(m));
        }
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        self.files.push(path);
    }

    fn check(self) {
        let meta = exiftool(&self.files);
        for path in &self.files {
            let name = path.file_name().unwrap().to_string_lossy();
            let o = meta
                .get(&path.display().to_string())
                .unwrap_or_else(|| panic!("{name}: exiftool cannot read what arrived"));
            assert!(location_tags(o).is_empty(), "{name} arrived with {:?}", location_tags(o));
            for (k, v) in o {
                let v = v.to_string();
                assert!(!v.contains(CAPTURE_DAY), "{name} arrived with {k} = {v}");
                assert!(!v.contains("PaviseCam") && !v.contains("Marker-X1"), "{name} arrived with {k} = {v}");
            }
        }
    }
}

/// The fixtures themselves carry what must not arrive, or the test proves nothing.
fn assert_planted(fixtures: &[(&[u8], &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = fixtures
        .iter()
        .map(|(bytes, name)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let meta = exiftool(&paths);
    for ((bytes, name), path) in fixtures.iter().zip(&paths) {
        let o = &meta[&path.display().to_string()];
        let dated = o.values().any(|v| v.to_string().contains(CAPTURE_DAY));
        assert!(!location_tags(o).is_empty() || dated, "{name}: the fixture carries nothing to find");
        assert!(MARKERS.iter().any(|m| contains(bytes, m)), "{name}: no marker planted");
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn request(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    let mut r = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "social.example")
        .header("content-length", body.len())
        .header("authorization", "Bearer test-token");
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

async fn send(pavise: &Pavise, req: http::Request<Full<Bytes>>) -> (u16, String) {
    let (resp, body) = send_from("127.0.0.1".parse().unwrap(), pavise.addr, req).await;
    (resp.status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// The data: URI payload bytes at `pointer` in a recorded JSON body (strict base64: pavise
/// re-encodes it), after checking the header is the one pavise writes (type and encoding).
fn json_file(rec: &Recorded, pointer: &str, header: &str) -> Vec<u8> {
    // Ruby's parser takes comments (one shape has one); serde_json does not.
    let mut text = String::from_utf8(rec.body.to_vec()).unwrap();
    while let (Some(a), Some(b)) = (text.find("/*"), text.find("*/")) {
        text.replace_range(a..b + 2, "");
    }
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON arrived broken: {e}"));
    let s = v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{pointer} missing in {v}"));
    let payload = s.strip_prefix(header).unwrap_or_else(|| panic!("the header changed: {}", &s[..s.len().min(60)]));
    base64::engine::general_purpose::STANDARD.decode(payload).expect("strict base64")
}

/// The parts of a recorded multipart body: (headers text, bytes).
async fn recorded_parts(rec: &Recorded) -> Vec<(String, Bytes)> {
    let ct = rec.headers["content-type"].to_str().unwrap();
    let boundary = ct.split("boundary=").nth(1).unwrap().to_owned();
    let body = rec.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(f) = mp.next_field().await.unwrap() {
        let head = format!("{:?}", f.headers());
        out.push((head, f.bytes().await.unwrap()));
    }
    out
}

fn form_value(rec: &Recorded, key: &str) -> Vec<u8> {
    let body = std::str::from_utf8(&rec.body).unwrap();
    for pair in body.split(['&', ';']) {
        if let Some((k, v)) = pair.split_once('=')
            && k == key
        {
            return pavise::privacy::media::form::url_decode(v.as_bytes());
        }
    }
    panic!("{key} missing from {}", &body[..body.len().min(200)]);
}

fn data_uri_file(text: &[u8], header: &str) -> Vec<u8> {
    let payload = text.strip_prefix(header.as_bytes()).unwrap_or_else(|| panic!("header changed"));
    base64::engine::general_purpose::STANDARD.decode(payload).expect("strict base64")
}

const BOUNDARY: &str = "AttackBoundary9Zq";

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (headers, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn every_upload_shape_arrives_without_location_or_markers() {
    let fx = fixtures();
    assert_planted(&[(&fx.jpeg, "fixture.jpg"), (&fx.mp4, "fixture.mp4"), (&fx.webm, "fixture.webm")]);
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| c.media.spill_threshold = pavise::units::Size(16 * 1024)).await;
    let jpeg64 = b64(&fx.jpeg);
    let jpeg_uri = format!("data:image/jpeg;base64,{jpeg64}");
    let mut oracle = Oracle::new();

    // 1. The plain multipart upload: forwarded, clean.
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let body = multipart(&[
        (
            "Content-Disposition: form-data; name=\"file\"; filename=\"IMG_0001.jpg\"\r\nContent-Type: image/jpeg",
            &fx.jpeg,
        ),
        ("Content-Disposition: form-data; name=\"description\"", b"the tower"),
    ]);
    assert_eq!(send(&pavise, request("POST", "/api/v2/media", Some(&ct), body)).await.0, 200, "plain multipart");
    let parts = recorded_parts(&upstream.last()).await;
    assert_eq!(&parts[1].1[..], b"the tower");
    oracle.clean(&parts[0].1, "plain.jpg");

    // 2. The plain JSON data: URI (Paperclip's DataUriAdapter): forwarded, clean, same header.
    let body = serde_json::json!({ "file": jpeg_uri, "description": "x" }).to_string();
    let (status, said) = send(&pavise, request("POST", "/api/v2/media", Some("application/json"), body.into())).await;
    assert_eq!(status, 200, "plain JSON data: URI: {said}");
    oracle.clean(&json_file(&upstream.last(), "/file", "data:image/jpeg;base64,"), "json.jpg");

    // 3. JSON spellings a strict parser would miss: `\/` and line breaks in the payload
    //    (Ruby's Base64 skips them), `\u0064ata:`, nesting, a comment hiding a quote, any
    //    JSON type Rails parses, upper case and parameters in the header.
    let escaped: String = jpeg64
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap().replace('/', "\\/"))
        .collect::<Vec<_>>()
        .join("\\n");
    // A high surrogate with no second escape: Ruby writes `?` and drops the byte after it,
    // so the `Q` is not part of the base64 the instance decodes.
    let (a, b) = jpeg64.split_at(400);
    let surrogate = format!("{a}\\uD800Q{b}");
    let json_shapes: Vec<(&str, &str, String, &str, &str)> = vec![
        (
            "application/json",
            "/api/v2/media",
            format!(r#"{{"file": "data:image\/jpeg;base64,{escaped}"}}"#),
            "/file",
            "data:image/jpeg;base64,",
        ),
        (
            "application/json; charset=utf-8",
            "/api/v1/statuses",
            format!(r#"{{"media": {{"attachments": [{{"file": "\u0064ata:image/jpeg;base64,{jpeg64}"}}]}}}}"#),
            "/media/attachments/0/file",
            "data:image/jpeg;base64,",
        ),
        (
            "text/x-json",
            "/api/v2/media",
            format!(r#"{{/* " */"file": "{jpeg_uri}"}}"#),
            "/file",
            "data:image/jpeg;base64,",
        ),
        (
            "application/activity+json",
            "/users/alice/outbox",
            format!(r#"{{"icon": "DATA:IMAGE/JPEG;BASE64,{jpeg64}"}}"#),
            "/icon",
            "DATA:IMAGE/JPEG;base64,",
        ),
        (
            "application/json",
            "/api/v2/media",
            format!(r#"{{"file": "data:image/jpeg;charset=utf-8;name=PXL_20241007_142045194.jpg;base64,{jpeg64}"}}"#),
            "/file",
            // Only the type and the encoding travel: a `name=` is the capture time.
            "data:image/jpeg;base64,",
        ),
        (
            "application/json",
            "/api/v2/media",
            format!(r#"{{"file": "data:image/jpeg;base64,{surrogate}"}}"#),
            "/file",
            "data:image/jpeg;base64,",
        ),
    ];
    for (i, (ct, path, body, pointer, header)) in json_shapes.into_iter().enumerate() {
        let (status, said) = send(&pavise, request("POST", path, Some(ct), body.into())).await;
        assert_eq!(status, 200, "JSON shape {i} ({ct}): {said}");
        oracle.clean(&json_file(&upstream.last(), pointer, header), &format!("json-{i}.jpg"));
    }

    // 4. Form-urlencoded (update_credentials avatar/header): plain, fully percent-encoded,
    //    and hidden after a `;` (Rails 8 on Rack 2 splits there too).
    let mut enc = Vec::new();
    pavise::privacy::media::datauri::percent_encode(jpeg_uri.as_bytes(), &mut enc);
    let enc = String::from_utf8(enc).unwrap();
    let all_encoded: String = jpeg_uri.bytes().map(|b| format!("%{b:02X}")).collect();
    let semicolon = format!("note=hi;header={}", jpeg_uri.replace(';', "%3B").replace('+', "%2B"));
    for (i, (body, key)) in [
        (format!("display_name=x&avatar={enc}"), "avatar"),
        (format!("avatar={all_encoded}"), "avatar"),
        (semicolon, "header"),
    ]
    .into_iter()
    .enumerate()
    {
        let req = request(
            "PATCH",
            "/api/v1/accounts/update_credentials",
            Some("application/x-www-form-urlencoded"),
            body.into(),
        );
        let (status, said) = send(&pavise, req).await;
        assert_eq!(status, 200, "form shape {i}: {said}");
        oracle.clean(
            &data_uri_file(&form_value(&upstream.last(), key), "data:image/jpeg;base64,"),
            &format!("form-{i}.jpg"),
        );
    }
    // A POST without any Content-Type is a form to Rack.
    let (status, _) =
        send(&pavise, request("POST", "/api/v1/accounts/update_credentials", None, format!("avatar={enc}").into()))
            .await;
    assert_eq!(status, 200);
    oracle
        .clean(&data_uri_file(&form_value(&upstream.last(), "avatar"), "data:image/jpeg;base64,"), "form-untyped.jpg");

    // 5. The query string (Rails merges it into params).
    let (status, said) = send(&pavise, request("POST", &format!("/api/v2/media?file={enc}"), None, Vec::new())).await;
    assert_eq!(status, 200, "query: {said}");
    let rec = upstream.last();
    let query = rec.uri.query().unwrap();
    let value = pavise::privacy::media::form::url_decode(query.strip_prefix("file=").unwrap().as_bytes());
    oracle.clean(&data_uri_file(&value, "data:image/jpeg;base64,"), "query.jpg");

    // 6. Multipart in every subtype and every part spelling: filename*= with octet-stream,
    //    no filename at all, no headers but the name, a text field holding a data: URI.
    for subtype in ["mixed", "related", "alternative", "x-anything"] {
        let ct = format!("multipart/{subtype}; boundary={BOUNDARY}");
        let body = multipart(&[
            (
                "Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''IMG%200001.jpg\r\nContent-Type: application/octet-stream",
                &fx.jpeg,
            ),
            ("Content-Disposition: form-data; name=\"thumbnail\"", &fx.jpeg),
            ("Content-Disposition: form-data; name=\"avatar\"", jpeg_uri.as_bytes()),
            ("Content-Type: image/jpeg", &fx.jpeg),
        ]);
        let (status, said) = send(&pavise, request("POST", "/api/v2/media", Some(&ct), body)).await;
        assert_eq!(status, 200, "multipart/{subtype}: {said}");
        let rec = upstream.last();
        assert!(
            rec.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(&format!("multipart/{subtype}; boundary=pavise-"))
        );
        let parts = recorded_parts(&rec).await;
        assert_eq!(parts.len(), 4, "multipart/{subtype}: every part arrives");
        // The head is rebuilt from pavise's parse: the filename* read as Rack reads it,
        // then cut to its extension (a phone's name for a photo is when it was taken).
        assert!(parts[0].0.contains(r#"filename=\"file.jpg\""#), "a neutral filename: {}", parts[0].0);
        assert!(!parts[0].0.contains("IMG"), "nothing of the sent name: {}", parts[0].0);
        oracle.clean(&parts[0].1, &format!("{subtype}-0.jpg"));
        oracle.clean(&parts[1].1, &format!("{subtype}-1.jpg"));
        oracle.clean(&data_uri_file(&parts[2].1, "data:image/jpeg;base64,"), &format!("{subtype}-2.jpg"));
        oracle.clean(&parts[3].1, &format!("{subtype}-3.jpg"));
    }

    // 7. Raw bodies: media whatever the declared type, or none.
    for (i, ct) in [Some("text/plain"), Some("application/octet-stream"), None].into_iter().enumerate() {
        let (status, said) = send(&pavise, request("POST", "/api/v1/anything", ct, fx.jpeg.clone())).await;
        assert_eq!(status, 200, "raw {ct:?}: {said}");
        oracle.clean(&upstream.last().body, &format!("raw-{i}.jpg"));
    }

    // 8. Containers that kept old bytes: free/skip payloads, capture times, Matroska's
    //    SegmentFilename, DateUTC, MuxingApp and WritingApp; spooled (16 KiB threshold)
    //    and in memory (a JSON data: URI).
    for (name, bytes, ct) in [("clip.mp4", &fx.mp4, "video/mp4"), ("clip.webm", &fx.webm, "video/webm")] {
        let body = multipart(&[(
            &format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {ct}"),
            bytes,
        )]);
        let (status, said) = send(
            &pavise,
            request("POST", "/api/v2/media", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), body),
        )
        .await;
        assert_eq!(status, 200, "{name}: {said}");
        let parts = recorded_parts(&upstream.last()).await;
        assert_eq!(parts[0].1.len(), bytes.len(), "{name}: patched in place");
        oracle.clean(&parts[0].1, name);
        let body = serde_json::json!({ "file": format!("data:{ct};base64,{}", b64(bytes)) }).to_string();
        let (status, said) =
            send(&pavise, request("POST", "/api/v2/media", Some("application/json"), body.into())).await;
        assert_eq!(status, 200, "{name} as data: URI: {said}");
        oracle.clean(&json_file(&upstream.last(), "/file", &format!("data:{ct};base64,")), &format!("json-{name}"));
    }

    // 9. Real phone files from the shared corpus, in the less usual shapes.
    if let Some(shared) = shared_dir() {
        let corpus = shared.join("corpus");
        for name in ["heic_photoprism_iphone_15_pro.heic", "video_mdx_with-gps.mov", "webp_mdx_Nikon_D1X.webp"] {
            let path = corpus.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{name} missing from the corpus");
                continue;
            };
            let body = serde_json::json!({ "file": format!("data:;base64,{}", b64(&bytes)) }).to_string();
            let (status, said) =
                send(&pavise, request("POST", "/api/v2/media", Some("application/json"), body.into())).await;
            assert_eq!(status, 200, "{name}: {said}");
            oracle.clean(&json_file(&upstream.last(), "/file", "data:;base64,"), &format!("corpus-{name}"));
        }
    }

    // 10. Bodies with no media pass byte for byte: JSON, a form, text, a large stream.
    let status_json = br#"{"status":"caf\u00e9 \/ data: is a scheme","media_ids":["1"]}"#.to_vec();
    let large: Vec<u8> = (0..3_000_000u32).map(|i| b"abcdefgh\n"[(i % 9) as usize]).collect();
    for (ct, body) in [
        (Some("application/json"), status_json),
        (Some("application/x-www-form-urlencoded"), b"status=caf%C3%A9&visibility=direct".to_vec()),
        (Some("text/plain"), b"hello".to_vec()),
        (Some("application/octet-stream"), large),
    ] {
        let (status, _) = send(&pavise, request("POST", "/api/v1/statuses", ct, body.clone())).await;
        assert_eq!(status, 200, "{ct:?}");
        let rec = upstream.last();
        assert!(rec.body == body, "{ct:?}: the body changed on the way");
        assert_eq!(rec.headers["content-length"].to_str().unwrap(), body.len().to_string());
    }

    // 11. Signed inbox deliveries are never changed, data: URI or not.
    let delivery = serde_json::json!({ "type": "Create", "icon": jpeg_uri }).to_string();
    let (status, _) =
        send(&pavise, request("POST", "/inbox", Some("application/activity+json"), delivery.clone().into())).await;
    assert_eq!(status, 200);
    assert_eq!(&upstream.last().body[..], delivery.as_bytes(), "inbox bytes untouched");

    let tmp = pavise.data_dir.path().join("media-tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "no temp file left behind");
    pavise.stop().await;
    oracle.check();
}

#[tokio::test]
async fn what_cannot_be_read_with_certainty_is_refused_and_nothing_arrives() {
    let fx = fixtures();
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let jpeg64 = b64(&fx.jpeg);
    let cut = b64(&fx.jpeg[..fx.jpeg.len() / 2]);
    let file = |ct: &str| {
        multipart(&[(
            &format!("Content-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: {ct}"),
            &fx.jpeg[..],
        )])
    };
    let mut gzip = request("POST", "/api/v2/media", Some("application/json"), br#"{"file":"data:,x"}"#.to_vec());
    gzip.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
    let qp = multipart(&[(
        "Content-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Transfer-Encoding: quoted-printable",
        b"=FF=D8=FF=E0",
    )]);
    let mut two_types = request(
        "POST",
        "/api/v2/media",
        Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
        file("image/jpeg"),
    );
    two_types.headers_mut().append("content-type", "multipart/form-data; boundary=other".parse().unwrap());
    // Rack transcodes ISO-2022-JP text parts: the escape sequences (here 30 of them, to
    // push `data:` past any short look at the start) vanish and a data: URI appears.
    let mut iso = "\x1b(B".repeat(30).into_bytes();
    iso.extend_from_slice(b"da\x1b(Bta:image/jpeg;base64,");
    iso.extend_from_slice(jpeg64.as_bytes());
    let iso = multipart(&[(
        "Content-Disposition: form-data; name=\"avatar\"\r\nContent-Type: text/plain; charset=ISO-2022-JP",
        &iso,
    )]);
    let cases: Vec<(&str, http::Request<Full<Bytes>>, u16)> = vec![
        (
            "a data: URI in ISO-2022-JP text",
            request(
                "PATCH",
                "/api/v1/accounts/update_credentials",
                Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
                iso,
            ),
            422,
        ),
        ("two Content-Type headers (Puma joins them)", two_types, 400),
        (
            "multipart without a boundary",
            request("POST", "/api/v2/media", Some("multipart/form-data"), file("image/jpeg")),
            400,
        ),
        (
            "two boundaries (Rack takes the last)",
            request(
                "POST",
                "/api/v2/media",
                Some(&format!("multipart/form-data; boundary=other; x-boundary={BOUNDARY}")),
                file("image/jpeg"),
            ),
            400,
        ),
        (
            "a space before boundary's =",
            request(
                "POST",
                "/api/v2/media",
                Some(&format!("multipart/form-data; boundary ={BOUNDARY}")),
                file("image/jpeg"),
            ),
            400,
        ),
        (
            "a truncated JPEG in a data: URI",
            request(
                "POST",
                "/api/v2/media",
                Some("application/json"),
                format!(r#"{{"file":"data:image/jpeg;base64,{cut}"}}"#).into(),
            ),
            422,
        ),
        (
            "TIFF in a data: URI",
            request(
                "POST",
                "/api/v2/media",
                Some("application/json"),
                br#"{"file":"data:;base64,SUkqAAgAAAAAAA=="}"#.to_vec(),
            ),
            422,
        ),
        (
            "text declared as an image",
            request(
                "POST",
                "/api/v2/media",
                Some("application/json"),
                br#"{"file":"data:image/png;base64,aGVsbG8gd29ybGQ="}"#.to_vec(),
            ),
            422,
        ),
        (
            "a truncated JPEG in a form",
            request(
                "POST",
                "/api/v1/accounts/update_credentials",
                Some("application/x-www-form-urlencoded"),
                format!("avatar=data:image/jpeg;base64,{}", cut.replace('+', "%2B")).into(),
            ),
            422,
        ),
        (
            "a truncated JPEG in the query",
            request(
                "POST",
                &format!("/api/v2/media?file=data:image/jpeg%3Bbase64,{}", cut.replace('+', "%2B").replace('/', "%2F")),
                None,
                Vec::new(),
            ),
            422,
        ),
        (
            "malformed JSON holding a data: URI",
            request(
                "POST",
                "/api/v2/media",
                Some("application/json"),
                format!(r#"{{"file":"data:image/jpeg;base64,{jpeg64}"#).into(),
            ),
            400,
        ),
        ("a gzip body", gzip, 415),
        (
            "a quoted-printable part",
            request("POST", "/api/v2/media", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), qp),
            415,
        ),
    ];
    for (what, req, want) in cases {
        let (status, said) = send(&pavise, req).await;
        assert_eq!(status, want, "{what}: {said}");
        let v: Value =
            serde_json::from_str(&said).unwrap_or_else(|_| panic!("{what}: not Mastodon-style JSON: {said}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty() && e.len() < 400), "{what}: {said}");
    }
    assert!(upstream.recorded().is_empty(), "nothing of a refused request reaches the instance");
    pavise.stop().await;
}

#[tokio::test]
async fn part_caps_are_413_and_temp_files_hold_no_descriptors() {
    let upstream = RecordingUpstream::start().await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");

    // Rack's caps, pavise's defaults: 4,096 parts in all, 128 file parts.
    let defaults = Pavise::start(&upstream.url(), |_| {}).await;
    let tiny: Vec<(String, Vec<u8>)> =
        (0..4097).map(|i| (format!("Content-Disposition: form-data; name=\"f{i}\""), b"x".to_vec())).collect();
    let refs: Vec<(&str, &[u8])> = tiny.iter().map(|(h, d)| (h.as_str(), d.as_slice())).collect();
    let (status, said) = send(&defaults, request("POST", "/api/v1/statuses", Some(&ct), multipart(&refs))).await;
    assert_eq!(status, 413, "{said}");
    assert!(said.contains("4096 parts"), "{said}");
    let files: Vec<(String, Vec<u8>)> = (0..129)
        .map(|i| (format!("Content-Disposition: form-data; name=\"f{i}\"; filename=\"{i}.txt\""), b"x".to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(h, d)| (h.as_str(), d.as_slice())).collect();
    let (status, said) = send(&defaults, request("POST", "/api/v1/statuses", Some(&ct), multipart(&refs))).await;
    assert_eq!(status, 413, "{said}");
    assert!(said.contains("128 file parts"), "{said}");
    // One under both caps passes.
    let (status, said) = send(&defaults, request("POST", "/api/v1/statuses", Some(&ct), multipart(&refs[..128]))).await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(upstream.recorded().len(), 1, "only the request under the caps was forwarded");
    defaults.stop().await;
}

/// A raw HTTP/1.1 request from `source` whose body is `sent` of a declared `len`: the
/// rest is withheld, so pavise holds what it got.
async fn hold_from(
    source: &str,
    to: std::net::SocketAddr,
    path: &str,
    ct: &str,
    sent: &[u8],
    len: usize,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    let mut conn = socket.connect(to).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: social.example\r\ncontent-type: {ct}\r\ncontent-length: {len}\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(sent).await.unwrap();
    conn
}

/// The status line pavise answered a held request with (it answers before the body ends).
async fn answer(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn metric(pavise: &Pavise, name: &str) -> u64 {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(pavise.admin_url("/metrics"))
        .bearer_auth(&pavise.token)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits until waiting bodies hold at least `bytes` of memory.
async fn wait_until_held(pavise: &Pavise, bytes: u64) {
    for _ in 0..400 {
        if metric(pavise, "pavise_media_spool_memory_bytes").await >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("bodies never held {bytes} bytes");
}

/// A multipart body of `n` parts of `size` bytes each, the closing boundary withheld.
fn open_multipart(first: usize, n: usize, size: usize) -> Vec<u8> {
    let mut body = multipart(&[("Content-Disposition: form-data; name=\"big\"", &vec![b'a'; first])]);
    body.truncate(body.len() - format!("--{BOUNDARY}--\r\n").len());
    for i in 0..n {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"p{i}\"\r\n\r\n").as_bytes(),
        );
        body.extend(std::iter::repeat_n(b'x', size));
        body.extend_from_slice(b"\r\n");
    }
    body
}

/// Issue 10, red team C1: one client held every temp-file slot with 400-byte parts on a
/// route without uploads, and every member's photo got 413. Now tiny parts never get a
/// file, a route that takes no uploads never spills, each client has a share of the temp
/// files, and other clients' uploads (spilled ones too) keep being served.
#[tokio::test]
async fn one_client_cannot_take_the_temp_space_and_tiny_parts_never_get_files() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.media.spill_threshold = pavise::units::Size(64 << 10);
        c.media.min_spill = pavise::units::Size(16 << 10);
        c.media.tmp_max_files = 8;
        c.media.tmp_client_files = 3;
    })
    .await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let tmp = pavise.data_dir.path().join("media-tmp");
    let spilled = || std::fs::read_dir(&tmp).unwrap().count();
    // Descriptors open on this relay's temp files: the process's whole count moves with
    // the tests running beside this one, each relay with its serving threads' runtimes.
    let fds = || {
        let open = std::fs::read_dir("/proc/self/fd").unwrap();
        open.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|target| target.starts_with(&tmp)).count()
    };
    let before = fds();

    // The red team's shape, on a timeline and on the media route: 60 KiB in memory, then
    // 400-byte parts. None gets a file; past the request's memory (64 + 16 KiB), 413.
    for path in ["/api/v1/timelines/home", "/api/v2/media"] {
        let body = open_multipart(60 << 10, 127, 400);
        let mut conn = hold_from("127.0.0.1", pavise.addr, path, &ct, &body, body.len() + 100_000).await;
        let said = answer(&mut conn).await;
        assert!(said.starts_with("HTTP/1.1 413"), "{path}: {said}");
        assert!(said.contains("would wait in memory"), "{path}: {said}");
        assert_eq!(spilled(), 0, "{path}: a tiny part got a temp file");
    }
    // A large part on a route that takes no uploads is refused, not spooled to disk.
    let body = open_multipart(200 << 10, 0, 0);
    let mut conn = hold_from("127.0.0.1", pavise.addr, "/api/v1/timelines/home", &ct, &body, body.len() + 1000).await;
    assert!(answer(&mut conn).await.starts_with("HTTP/1.1 413"));
    assert_eq!(spilled(), 0);

    // On the media route a large part spills; one client may hold 3 such files at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        let body = open_multipart(100 << 10, 0, 0);
        held.push(hold_from("127.0.0.1", pavise.addr, "/api/v2/media", &ct, &body, body.len() + 1000).await);
    }
    wait_for("three spilled parts", || spilled() == 3).await;
    let body = open_multipart(100 << 10, 0, 0);
    let mut fourth = hold_from("127.0.0.1", pavise.addr, "/api/v2/media", &ct, &body, body.len() + 1000).await;
    let said = answer(&mut fourth).await;
    assert!(said.starts_with("HTTP/1.1 413") && said.contains("too many uploads waiting"), "{said}");
    assert!(fds() < before + 20, "{} descriptors for {} spilled parts (was {before})", fds(), spilled());

    // Another member's photo, large enough to spill, is served meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("big.jpg");
    run(Command::new("convert")
        .args(["-size", "400x400", "xc:gray", "+noise", "Random", "-quality", "95"])
        .arg(&photo));
    let photo = std::fs::read(photo).unwrap();
    assert!(photo.len() > 100 << 10, "the photo spills ({} bytes)", photo.len());
    let body = multipart(&[(
        "Content-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg",
        &photo,
    )]);
    let (resp, said) =
        send_from("127.0.0.2".parse().unwrap(), pavise.addr, request("POST", "/api/v2/media", Some(&ct), body)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&said));

    // A client that gives up takes its temp files with it.
    drop(held);
    drop(fourth);
    wait_for("temp files deleted", || spilled() == 0).await;
    assert_eq!(metric(&pavise, "pavise_media_tmp_files").await, 0);
    assert_eq!(metric(&pavise, "pavise_media_tmp_bytes").await, 0);
    pavise.stop().await;
}

/// Issue 10, red team C2: bodies waiting to be judged sat in memory outside any cap. Now
/// they are charged to `spool_memory` (and a client's share of it): past the client's
/// share its requests get 503 with `Retry-After`, others are still served, and the
/// memory is all given back when the requests end.
#[tokio::test]
async fn memory_for_waiting_bodies_is_capped_shared_and_given_back() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.media.spill_threshold = pavise::units::Size(64 << 10);
        c.media.spool_memory = pavise::units::Size(256 << 10);
        c.media.spool_client_memory = pavise::units::Size(128 << 10);
    })
    .await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    // Slow requests holding ~60 KiB each on a route without uploads (memory only).
    let body = open_multipart(60 << 10, 0, 0);
    let hold = |source: &'static str| {
        let body = body.clone();
        let addr = pavise.addr;
        let ct = ct.clone();
        async move { hold_from(source, addr, "/api/v1/timelines/home", &ct, &body, body.len() + 1000).await }
    };
    let mut held = vec![hold("127.0.0.1").await, hold("127.0.0.1").await];
    wait_until_held(&pavise, 120 << 10).await;
    let mut third = hold("127.0.0.1").await;
    let said = answer(&mut third).await;
    assert!(said.starts_with("HTTP/1.1 503"), "past the client's share: {said}");
    assert!(said.to_ascii_lowercase().contains("retry-after: "), "{said}");
    // Another client is served meanwhile, and may take the rest of the relay's memory.
    let status = br#"{"status":"still here","visibility":"direct"}"#.to_vec();
    let (resp, _) = send_from(
        "127.0.0.3".parse().unwrap(),
        pavise.addr,
        request("POST", "/api/v1/statuses", Some("application/json"), status),
    )
    .await;
    assert_eq!(resp.status, 200);
    held.push(hold("127.0.0.3").await);
    held.push(hold("127.0.0.4").await);
    wait_until_held(&pavise, 240 << 10).await;
    let mut over = hold("127.0.0.5").await;
    assert!(answer(&mut over).await.starts_with("HTTP/1.1 503"), "past the relay's memory");
    let in_use = metric(&pavise, "pavise_media_spool_memory_bytes").await;
    assert!(in_use > 200 << 10 && in_use <= 256 << 10, "{in_use} bytes held");
    drop(held);
    drop((third, over));
    for _ in 0..200 {
        if metric(&pavise, "pavise_media_spool_memory_bytes").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(metric(&pavise, "pavise_media_spool_memory_bytes").await, 0, "memory given back");
    // And a forwarded body's charge lasts only until it has gone.
    let (resp, _) = send_from(
        "127.0.0.1".parse().unwrap(),
        pavise.addr,
        request(
            "POST",
            "/api/v2/media",
            Some(&ct),
            multipart(&[("Content-Disposition: form-data; name=\"description\"", b"x")]),
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(metric(&pavise, "pavise_media_spool_memory_bytes").await, 0);
    pavise.stop().await;
}

#[tokio::test]
async fn every_client_ip_header_spelling_is_stripped_and_truncate_mode_logs_a_pseudonym() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.client_ip.mode = pavise::config::ClientIpMode::Truncate;
        c.log.access_log = true;
    })
    .await;
    let names = [
        "X-Originating-IP",
        "X-ARR-ClientIP",
        "Incap-Client-IP",
        "X-Sucuri-ClientIP",
        "X-Sucuri-Country",
        "X-Remote-IP",
        "X-Remote-Addr",
        "X-SP-Forwarded-IP",
        "Ali-CDN-Real-IP",
        "X-Client-Geo-Location",
        "X-Client-Region",
        "CDN-RequestCountryCode",
        "X-Forwarded-Client-Cert",
        "X_Forwarded_For",
        "Client_IP",
        "X_REAL_IP",
        "cf_connecting_ip",
        "True_Client_IP",
    ];
    let mut req = request("GET", "/api/v1/timelines/home", None, Vec::new());
    for name in names {
        req.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), "6.6.6.6".parse().unwrap());
    }
    let source: std::net::IpAddr = "127.77.91.23".parse().unwrap();
    let (resp, _) = send_from(source, pavise.addr, req).await;
    assert_eq!(resp.status, 200);
    let rec = upstream.last();
    for (name, value) in &rec.headers {
        assert!(!value.as_bytes().windows(7).any(|w| w == b"6.6.6.6"), "{name}: {value:?} reached the instance");
        let folded = name.as_str().replace('_', "-");
        assert!(
            !names.iter().any(|n| n.to_ascii_lowercase().replace('_', "-") == folded) || folded == "x-forwarded-for",
            "{name} reached the instance"
        );
    }
    // The instance gets the /24 (that is the mode); pavise's own access log does not.
    assert_eq!(rec.headers["x-forwarded-for"], "127.77.91.0");
    pavise.stop().await;
    let access: Vec<String> =
        crate::support::logs().lines().filter(|l| l.contains("pavise::access")).map(str::to_owned).collect();
    assert!(!access.is_empty(), "the access log is on");
    for line in access {
        assert!(!line.contains("127.77.91."), "the access log keeps the real network: {line}");
    }
}

#[test]
fn pavise_check_refuses_a_socks_listener_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("pavise.toml");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for (addr, ok) in
        [("0.0.0.0:9050", false), ("[::]:9050", false), ("10.0.0.5:9050", false), ("127.0.0.1:9050", true)]
    {
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\npolicies = \"{}\"\n[egress]\nmode = \"direct\"\nsocks_listen = \"{addr}\"\n",
                dir.path().display(),
                policies.display()
            ),
        )
        .unwrap();
        let out = Command::new(pavise_bin()).arg("check").arg("--config").arg(&config).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.success(), ok, "{addr}: {said}");
        if !ok {
            assert!(said.contains("egress.socks_listen") && said.contains("loopback"), "{addr}: {said}");
        }
    }
}

/// The in-process stand-in for the `bodies` fuzz target: mutated JSON and form bodies
/// holding a real photo's `data:` URI are rewritten or refused, never a panic, and a
/// rewritten body is a fixed point (a second pass changes nothing).
#[test]
fn mutated_bodies_are_rewritten_to_a_fixed_point_never_a_panic() {
    use pavise::privacy::media::{datauri, form, json};
    let fx = fixtures();
    let uri = format!("data:image/jpeg;base64,{}", b64(&fx.jpeg));
    let mut enc = Vec::new();
    datauri::percent_encode(uri.as_bytes(), &mut enc);
    let seeds: Vec<(bool, Vec<u8>)> = vec![
        (
            true,
            format!(r#"{{"a": [{{"file": "{}"}}], /* " */ "b": "\u0064ata:,x"}}"#, uri.replace('/', "\\/"))
                .into_bytes(),
        ),
        (true, format!(r#"{{"file": "DATA:image/jpeg;charset=x;base64,{}"}}"#, b64(&fx.jpeg)).into_bytes()),
        (false, [b"x=1&avatar=".as_slice(), &enc, b";h=data:,y"].concat()),
    ];
    let scrub = |t: &[u8]| datauri::scrub_value(t, 1 << 20).map(|r| r.map(|r| r.text));
    let mut rng = 0x5EED_0010_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut rewritten, mut refused) = (0, 0);
    for round in 0..400 {
        for (is_json, seed) in &seeds {
            let mut input = seed.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % input.len().max(1);
                match next() % 4 {
                    0 => input[at] ^= 1 << (next() % 8),
                    1 => input.truncate(at),
                    2 => input.insert(at, b"\\\"%;&=/*:d"[(next() % 10) as usize]),
                    _ => drop(input.drain(at..(at + (next() as usize) % 16).min(input.len()))),
                }
                if input.is_empty() {
                    input.push(b'{');
                }
            }
            let pass = |b: &[u8]| -> Result<Option<Vec<u8>>, String> {
                if *is_json {
                    json::rewrite(b, scrub).map_err(|e| e.to_string())
                } else {
                    form::rewrite(b, scrub).map_err(|e| e.to_string())
                }
            };
            let first = pass(&input).ok().flatten();
            match first {
                Some(out) => {
                    rewritten += 1;
                    if let Some(second) = pass(&out).expect("a rewritten body reads again") {
                        assert_eq!(second, out, "round {round}: a rewrite is not a fixed point");
                    }
                }
                None => refused += 1,
            }
        }
    }
    assert!(rewritten > 50 && refused > 50, "{rewritten} rewritten, {refused} unchanged or refused");
}

/// Issue 10, red team H1: a denylist is never complete. The headers real edges add
/// (CDNetworks' client address, Cloudflare's colo, Fly's region, Fastly's POP, Vercel's
/// region) never reach the instance; only what it needs does, and a signed delivery keeps
/// every header its signature covers, so it still verifies.
#[tokio::test]
async fn only_allowlisted_headers_reach_the_instance_and_signed_ones_keep_what_they_cover() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.client_ip.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
        c.client_ip.allow_headers = vec!["X-Instance-Feature".into()];
    })
    .await;
    let edge = [
        ("X-Forwarded-For", "203.0.113.77"),
        ("Cdn-Src-Ip", "203.0.113.77"),
        ("X-Real-Client-IP", "203.0.113.77"),
        ("CF-Ray", "8e9c1b2a3f4d5e6f-TLV"),
        ("Fly-Region", "otp"),
        ("Fly-Request-Id", "01JAB4Y0W2Q3ZC7M6T9N5K8R1S-otp"),
        ("Fastly-FF", "cache-tlv3200-TLV"),
        ("X-Vercel-Id", "tlv1::iad1::abcde-1700000000000-0123456789ab"),
        ("X-City", "Tel Aviv"),
        ("Geo", "32.09;34.86"),
    ];
    let mut req = request("GET", "/api/v1/timelines/home", None, Vec::new());
    for (k, v) in edge {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    req.headers_mut().insert("accept-language", "he-IL".parse().unwrap());
    req.headers_mut().insert("x-instance-feature", "on".parse().unwrap());
    let (resp, _) = send_from("127.0.0.2".parse().unwrap(), pavise.addr, req).await;
    assert_eq!(resp.status, 200);
    let rec = upstream.last();
    for (name, value) in &rec.headers {
        let v = value.to_str().unwrap_or_default();
        for needle in ["203.0.113", "TLV", "tlv", "otp", "Tel Aviv", "32.09"] {
            assert!(!v.contains(needle), "{name}: {v:?} reached the instance");
        }
    }
    let mut got: Vec<&str> = rec.headers.keys().map(|n| n.as_str()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "accept-language",
            "authorization",
            "content-length",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-instance-feature"
        ]
    );

    // A signed delivery: its covered headers arrive, its uncovered ones and the denied
    // ones (signed or not) do not.
    let body = br#"{"type":"Create"}"#.to_vec();
    let mut req = request("POST", "/inbox", Some("application/activity+json"), body);
    for (k, v) in [
        ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("digest", "SHA-256=abc="),
        (
            "signature",
            r#"keyId="https://a.example/u#k",headers="(request-target) host date digest x-peer-extra cf-ray",signature="c2ln""#,
        ),
        ("x-peer-extra", "1"),
        ("x-peer-unsigned", "2"),
        ("cf-ray", "8e9c1b2a3f4d5e6f-TLV"),
        ("cf-connecting-ip", "203.0.113.77"),
    ] {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let (resp, _) = send_from("127.0.0.1".parse().unwrap(), pavise.addr, req).await;
    assert_eq!(resp.status, 200);
    let rec = upstream.last();
    assert_eq!(rec.headers["x-peer-extra"], "1");
    assert_eq!(rec.headers["digest"], "SHA-256=abc=");
    for gone in ["x-peer-unsigned", "cf-connecting-ip", "cf-ray"] {
        assert!(!rec.headers.contains_key(gone), "{gone} reached the instance");
    }
    // Covered or not, an edge's colo code is in the deny table: a signature cannot carry it.
    assert!(!rec.headers.contains_key("cf-ray"));
    pavise.stop().await;
}

/// Issue 10, red team F1: a WMA file with a location passed as a part whose filename and
/// type sat in other header lines (where Rack 2.2 finds them). Now every part, file or
/// not, must be media pavise scrubs or text, and the instance reads only the head pavise
/// rebuilt. Each unscrubbed format (binary or text-shaped) in each shape is refused and
/// nothing reaches the instance; a JPEG with the same odd head arrives clean under two
/// headers.
#[tokio::test]
async fn a_part_is_scrubbed_media_or_text_whatever_its_head_and_the_instance_reads_pavise_s_head() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ff = |args: &[&str], out: &str| {
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=0.3"])
            .args(args)
            .arg(p(out)));
    };
    let tag = ["-metadata", "title=VID_PARIS_0002", "-metadata", "location=+48.8584+002.2945/"];
    ff(&[&["-c:a", "wmav2"][..], &tag].concat(), "a.wma");
    ff(&tag, "a.aiff");
    ff(&tag, "a.au");
    ff(&[&["-f", "mpegts"][..], &tag].concat(), "a.ts");
    ff(&tag, "a.flv");
    ff(&tag, "a.avi");
    let mut unscrubbed: Vec<(&str, Vec<u8>)> = ["a.wma", "a.aiff", "a.au", "a.ts", "a.flv", "a.avi"]
        .iter()
        .map(|n| (*n, std::fs::read(p(n)).unwrap()))
        .collect();
    let utf16: Vec<u8> = "VID_PARIS".encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (name, bytes) in &unscrubbed {
        let planted = contains(bytes, b"VID_PARIS") || contains(bytes, &utf16) || contains(bytes, b"48.8584");
        assert!(planted, "{name}: nothing planted");
    }
    let svg = r#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><metadata><rdf:RDF><exif:GPSLatitude>48.8584</exif:GPSLatitude></rdf:RDF></metadata></svg>"#;
    unscrubbed.push(("a.svg", svg.as_bytes().to_vec()));
    unscrubbed.push(("a.srt", b"1\r\n00:00:00,000 --> 00:00:01,000\r\nGPS(48.8584,2.2945) Paris\r\n".to_vec()));
    unscrubbed.push(("a.pdf", b"%PDF-1.4\n1 0 obj<</Title(Paris 48.8584)>>endobj\n%%EOF\n".to_vec()));
    // Valid UTF-8, no control bytes, still no caption: a text form of media (PostScript).
    unscrubbed.push(("a.ps", b"%!PS-Adobe-3.0\n%%Title: Paris 48.8584\nshowpage\n".to_vec()));

    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| c.media.spill_threshold = pavise::units::Size(4096)).await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let heads = [
        "Content-Disposition: form-data; name=\"file\"",
        "Content-Disposition: form-data; name=\"file\"\r\nX-Note: ; filename=\"voice.asf\"\r\nX-Content-Type: video/x-ms-asf",
        "Content-Disposition: form-data; name=\"file\"; filename=\"voice.asf\"\r\nContent-Type: application/octet-stream",
        "Content-Disposition: form-data; name=\"description\"\r\nContent-Type: text/plain; charset=utf-8",
    ];
    for (name, bytes) in &unscrubbed {
        for (i, head) in heads.iter().enumerate() {
            let body = multipart(&[(head, bytes), ("Content-Disposition: form-data; name=\"x\"", b"y")]);
            let (status, said) = send(&pavise, request("POST", "/api/v2/media", Some(&ct), body)).await;
            assert_eq!(status, 422, "{name} in head {i}: {said}");
        }
        let uri = serde_json::json!({ "file": format!("data:;base64,{}", b64(bytes)) }).to_string();
        let (status, said) =
            send(&pavise, request("POST", "/api/v2/media", Some("application/json"), uri.into())).await;
        assert_eq!(status, 422, "{name} as a data: URI: {said}");
        let (status, said) =
            send(&pavise, request("POST", "/api/v1/media", Some("application/octet-stream"), bytes.clone())).await;
        assert_eq!(status, 422, "{name} as a raw body: {said}");
    }
    assert!(upstream.recorded().is_empty(), "an unscrubbed format reached the instance");

    // The same odd head around a JPEG, and plain text parts: forwarded, under exactly the
    // two headers pavise parsed (Rack 2.2 would have read X-Note's filename and
    // X-Content-Type's type; now there is nothing else to read).
    let body = multipart(&[
        (heads[1], &fx.jpeg),
        (
            "Content-Disposition: form-data; name=\"description\"\r\nX-Content-Type: text/plain; charset=ISO-2022-JP\r\nContent-ID: <a>",
            "the tower ☕".as_bytes(),
        ),
        (
            "Content-Disposition: form-data; name=\"import\"; filename=\"follows.csv\"\r\nContent-Type: text/csv",
            b"Account address\r\nalice@example.com\r\n",
        ),
    ]);
    let (status, said) = send(&pavise, request("POST", "/api/v2/media", Some(&ct), body)).await;
    assert_eq!(status, 200, "{said}");
    let rec = upstream.last();
    let boundary = rec.headers["content-type"].to_str().unwrap().split("boundary=").nth(1).unwrap().to_owned();
    let raw = String::from_utf8_lossy(&rec.body).into_owned();
    let heads: Vec<&str> =
        raw.split(&format!("--{boundary}\r\n")).skip(1).map(|part| part.split("\r\n\r\n").next().unwrap()).collect();
    assert_eq!(
        heads,
        [
            "Content-Disposition: form-data; name=\"file\"",
            "Content-Disposition: form-data; name=\"description\"",
            "Content-Disposition: form-data; name=\"import\"; filename=\"follows.csv\"\r\nContent-Type: text/csv",
        ]
    );
    let parts = recorded_parts(&rec).await;
    assert_eq!(&parts[1].1[..], "the tower ☕".as_bytes());
    assert_eq!(&parts[2].1[..], b"Account address\r\nalice@example.com\r\n");
    let mut oracle = Oracle::new();
    oracle.clean(&parts[0].1, "odd-head.jpg");
    pavise.stop().await;
    oracle.check();
}

/// A display profile as a camera writes one: its maker in the header, its model in a
/// description, a white point (colour, which must survive).
fn device_icc() -> Vec<u8> {
    let mut desc = b"desc\0\0\0\0".to_vec();
    let name = b"sRGB Monitor (for PaviseCam Marker-X1)";
    desc.extend_from_slice(&(name.len() as u32 + 1).to_be_bytes());
    desc.extend_from_slice(name);
    desc.extend_from_slice(&[0; 1 + 4 + 4 + 2 + 1 + 67]);
    while !desc.len().is_multiple_of(4) {
        desc.push(0);
    }
    let wtpt = b"XYZ \0\0\0\0\0\0\xf3\x51\0\x01\0\0\0\0\xd3\x2b".to_vec();
    let mut p = vec![0u8; 128];
    p[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(b"RGB ");
    p[20..24].copy_from_slice(b"XYZ ");
    p[36..40].copy_from_slice(b"acsp");
    p[48..52].copy_from_slice(b"PCAM");
    p.extend_from_slice(&2u32.to_be_bytes());
    let first = 128 + 4 + 24;
    for (sig, off, len) in [(b"desc", first, desc.len()), (b"wtpt", first + desc.len(), wtpt.len())] {
        p.extend_from_slice(sig);
        p.extend_from_slice(&(off as u32).to_be_bytes());
        p.extend_from_slice(&(len as u32).to_be_bytes());
    }
    p.extend(desc);
    p.extend(wtpt);
    let len = p.len() as u32;
    p[0..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// The red team's unverified hiding places, decided: an ICC profile's device and text
/// (JPEG APP2, PNG iCCP, WebP ICCP) are blanked and its colour kept; APP14 Adobe keeps
/// only its 12 defined bytes; a table segment longer than its tables is refused.
#[tokio::test]
async fn icc_profiles_lose_the_device_and_jpeg_segments_carry_nothing_extra() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("device.icc"), device_icc()).unwrap();
    let icc = format!("-ICC_Profile<={}", p("device.icc").display());
    run(Command::new("convert").args(["-size", "32x24", "gradient:red-blue"]).arg(p("a.png")));
    run(Command::new("convert").args(["-size", "32x24", "gradient:red-blue"]).arg(p("a.webp")));
    std::fs::write(p("a.jpg"), &fx.jpeg).unwrap();
    for n in ["a.jpg", "a.png", "a.webp"] {
        run(Command::new("exiftool").args(["-q", "-overwrite_original", &icc]).arg(p(n)));
        let bytes = std::fs::read(p(n)).unwrap();
        let planted = contains(&bytes, b"PaviseCam") || n == "a.png";
        assert!(planted, "{n}: the profile is not in the fixture");
    }
    // APP14 Adobe with a tail, and a DQT with a tail, right after SOI.
    let seg = |marker: u8, payload: &[u8]| {
        [&[0xFF, marker][..], &((payload.len() + 2) as u16).to_be_bytes(), payload].concat()
    };
    let after_soi = |extra: &[u8]| [&fx.jpeg[..2], extra, &fx.jpeg[2..]].concat();
    let adobe = after_soi(&seg(0xEE, b"Adobe\0\x64\0\0\0\0\x01Marker-X1 Paris"));
    let mut dqt = vec![0u8; 65];
    dqt.extend_from_slice(b"48.8584");
    let dqt = after_soi(&seg(0xDB, &dqt));

    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let upload = |name: &str, bytes: &[u8]| {
        let head = format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"");
        request("POST", "/api/v2/media", Some(&ct), multipart(&[(&head, bytes)]))
    };
    let mut oracle = Oracle::new();
    let mut arrived = Vec::new();
    for n in ["a.jpg", "a.png", "a.webp"] {
        let (status, said) = send(&pavise, upload(n, &std::fs::read(p(n)).unwrap())).await;
        assert_eq!(status, 200, "{n}: {said}");
        let bytes = recorded_parts(&upstream.last()).await.remove(0).1;
        oracle.clean(&bytes, &format!("icc-{n}"));
        arrived.push(oracle.files.last().unwrap().clone());
    }
    let (status, said) = send(&pavise, upload("adobe.jpg", &adobe)).await;
    assert_eq!(status, 200, "{said}");
    oracle.clean(&recorded_parts(&upstream.last()).await.remove(0).1, "adobe.jpg");
    let (status, said) = send(&pavise, upload("dqt.jpg", &dqt)).await;
    assert_eq!(status, 422, "{said}");
    pavise.stop().await;
    // The colour survives: exiftool still reads the profile's class and white point.
    let meta = exiftool(&arrived);
    for path in &arrived {
        let o = &meta[&path.display().to_string()];
        assert_eq!(o.get("ICC-header:ProfileClass").and_then(Value::as_str), Some("mntr"), "{}: {o:?}", path.display());
        assert!(o.get("ICC_Profile:MediaWhitePoint").is_some(), "{}: {o:?}", path.display());
        let maker = o.get("ICC-header:DeviceManufacturer").map(Value::to_string).unwrap_or_default();
        assert!(!maker.contains("PCAM"), "{}: {maker}", path.display());
    }
    oracle.check();
}

/// A QuickTime user-data string atom (`©xyz`, `©mak`, ...): length, language, text.
fn ud_string(tag: &[u8; 4], text: &str) -> Vec<u8> {
    let body = [&(text.len() as u16).to_be_bytes()[..], &[0x15, 0xC7], text.as_bytes()].concat();
    [&((body.len() + 8) as u32).to_be_bytes()[..], tag, &body].concat()
}

fn mp4_box(kind: &[u8], body: &[u8]) -> Vec<u8> {
    [&((body.len() + 8) as u32).to_be_bytes()[..], kind, body].concat()
}

/// What the red team planted (F1): a `udta` with a location, a make naming the place it
/// hides in, a model and a capture date; and an iTunes-style `ilst` with the same.
fn planted_udta(place: &str) -> Vec<u8> {
    let strings = [
        ud_string(b"\xa9xyz", "+48.8584+002.2945/"),
        ud_string(b"\xa9mak", &format!("PaviseCam-{place}")),
        ud_string(b"\xa9mod", "Marker-X1"),
        ud_string(b"\xa9day", "2024-06-04T14:02:00Z"),
    ];
    mp4_box(b"udta", &strings.concat())
}

fn planted_ilst(place: &str) -> Vec<u8> {
    let item = |tag: &[u8; 4], text: &str| {
        mp4_box(tag, &mp4_box(b"data", &[&[0, 0, 0, 1, 0, 0, 0, 0][..], text.as_bytes()].concat()))
    };
    mp4_box(
        b"ilst",
        &[item(b"\xa9xyz", "+48.8584+002.2945/"), item(b"\xa9mak", &format!("PaviseCam-ilst-{place}"))].concat(),
    )
}

/// Appends `extra(path)` inside every box at `path` (`/moov/trak/edts`,
/// `/moov/trak/mdia/minf/stbl/stsd/avc1`), descending into containers and sample
/// descriptions past their fixed fields and fixing every size above, as the red team's
/// m1_stsd_udta.py does. ffmpeg writes `moov` after `mdat`, so no chunk offset moves.
fn plant(b: &[u8], parent: &str, extra: &dyn Fn(&str) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if size < 8 || at + size > b.len() {
            break;
        }
        let kind = &b[at + 4..at + 8];
        let path = format!("{parent}/{}", String::from_utf8_lossy(kind));
        let body = &b[at + 8..at + size];
        let fixed = match kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"wave" => Some(0),
            b"stsd" => Some(8),
            b"avc1" => Some(78),
            b"mp4a" if parent.ends_with("/stsd") => Some(match u16::from_be_bytes([body[8], body[9]]) {
                1 => 44,
                2 => 64,
                _ => 28,
            }),
            _ => None,
        };
        let mut new_body = match fixed {
            Some(n) => [&body[..n], &plant(&body[n..], &path, extra)[..]].concat(),
            None => body.to_vec(),
        };
        new_body.extend(extra(&path));
        out.extend(mp4_box(kind, &new_body));
        at += size;
    }
    out.extend_from_slice(&b[at..]);
    out
}

/// Every place of the red team's class: inside the video and sound descriptions, a
/// QuickTime `wave`, `edts`, `dinf`, and in each track a `tref`, `tapt`, `load`, `imap`,
/// `clip`, `matt` and `kmat` holding a `udta`.
fn plant_everywhere(mp4: &[u8]) -> Vec<u8> {
    plant(mp4, "", &|path| {
        let leaf = path.rsplit('/').next().unwrap();
        match leaf {
            "avc1" | "mp4a" if path.ends_with(&format!("/stsd/{leaf}")) => {
                [planted_udta(leaf), planted_ilst(leaf)].concat()
            }
            "wave" | "edts" | "dinf" => planted_udta(leaf),
            "trak" => ["tref", "tapt", "load", "imap", "clip", "matt", "kmat"]
                .iter()
                .flat_map(|c| mp4_box(c.as_bytes(), &planted_udta(c)))
                .collect(),
            _ => Vec::new(),
        }
    })
}

/// What ffprobe reads in a file: every format and stream tag, and each stream's type.
fn ffprobe(path: &std::path::Path) -> (Vec<(String, String)>, Vec<String>) {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format_tags:stream_tags:stream=codec_type", "-of", "json"])
        .arg(path));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags = Vec::new();
    let mut types = Vec::new();
    let mut take = |o: &Value| {
        for (k, v) in o.get("tags").and_then(Value::as_object).into_iter().flatten() {
            tags.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
        }
    };
    for s in v["streams"].as_array().into_iter().flatten() {
        types.push(s["codec_type"].as_str().unwrap_or_default().to_owned());
        take(s);
    }
    take(&v["format"]);
    (tags, types)
}

/// md5 of every decoded frame or sample of the video (`v`) or sound (`a`) streams.
fn decoded(path: &std::path::Path, streams: &str) -> String {
    let out = run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args([
        "-map",
        &format!("0:{streams}?"),
        "-f",
        "md5",
        "-",
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The red team's second pass (issue 10, F1 and F2): metadata where pavise used to keep
/// bytes without reading them. F1: a `udta`/`ilst` inside sample descriptions, `wave`,
/// `edts`, `dinf`, `tref`, `tapt` and QuickTime track boxes of an MP4, a MOV and an M4A,
/// which ffmpeg reads as the file's location, make, model and date. F2: WebM and MKV
/// subtitle tracks (WebVTT, SRT, ASS with a script title) whose cues carry GPS text, as
/// drones and dashcams write them, and an attachment. Through pavise, ffprobe (and
/// exiftool) must find none of it in what the instance received; the subtitle tracks
/// must be gone; every video frame and audio sample must decode as before.
#[tokio::test]
async fn metadata_where_pavise_kept_bytes_unread_never_reaches_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ff = |args: &[&str]| {
        run(Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args));
    };
    let av = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i", "sine=f=440", "-t", "1"];
    let h264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"];
    ff(&[&av[..], &h264, &[p("a.mov").to_str().unwrap()]].concat());
    ff(&["-i", p("a.mov").to_str().unwrap(), "-c", "copy", "-f", "mp4", p("a.mp4").to_str().unwrap()]);
    ff(&["-i", p("a.mov").to_str().unwrap(), "-vn", "-c", "copy", p("a.m4a").to_str().unwrap()]);
    let cue = "GPS(48.8584,2.2945,30) F/2.8 ISO100 PaviseCam 2024-06-04 14:02:00";
    std::fs::write(p("s.srt"), format!("1\n00:00:00,000 --> 00:00:01,000\n{cue}\n")).unwrap();
    std::fs::write(
        p("s.ass"),
        format!(
            "[Script Info]\nTitle: Paris Marker-X1\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, \
             Fontsize\nStyle: Default,Arial,20\n\n[Events]\nFormat: Layer, Start, End, Style, Text\nDialogue: \
             0,0:00:00.00,0:00:01.00,Default,{cue}\n"
        ),
    )
    .unwrap();
    let (srt, ass) = (p("s.srt"), p("s.ass"));
    let (srt, ass) = (srt.to_str().unwrap(), ass.to_str().unwrap());
    let vp8 = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "libvpx", "-b:v", "100k"];
    ff(&[&vp8[..], &[p("v.webm").to_str().unwrap()]].concat());
    let (webm, mov) = (p("v.webm"), p("a.mov"));
    ff(&["-i", webm.to_str().unwrap(), "-i", srt, "-map", "0", "-map", "1", "-c:v", "copy", "-c:s", "webvtt"]
        .into_iter()
        .chain([p("subs.webm").to_str().unwrap()])
        .collect::<Vec<_>>());
    ff(&["-i", mov.to_str().unwrap(), "-i", ass, "-i", srt, "-map", "0", "-map", "1", "-map", "2", "-c:v", "copy"]
        .into_iter()
        .chain(["-c:a", "libopus", "-c:s:0", "ass", "-c:s:1", "srt", "-attach", srt])
        .chain(["-metadata:s:t", "mimetype=text/plain", p("subs.mkv").to_str().unwrap()])
        .collect::<Vec<_>>());
    let mut fixtures: Vec<(&str, Vec<u8>)> = Vec::new();
    for name in ["a.mp4", "a.mov", "a.m4a"] {
        let planted = plant_everywhere(&std::fs::read(p(name)).unwrap());
        fixtures.push((name, planted));
    }
    for name in ["subs.webm", "subs.mkv"] {
        fixtures.push((name, std::fs::read(p(name)).unwrap()));
    }
    // The fixtures carry what must not arrive, as ffprobe reads it, or this proves nothing.
    for (name, bytes) in &fixtures {
        let path = p(&format!("planted-{name}"));
        std::fs::write(&path, bytes).unwrap();
        let (tags, types) = ffprobe(&path);
        if name.starts_with("subs") {
            assert!(types.iter().filter(|t| *t == "subtitle").count() >= 1, "{name}: {types:?}");
            assert!(contains(bytes, b"48.8584") && contains(bytes, b"PaviseCam"), "{name}");
        } else {
            let location = tags.iter().any(|(k, v)| k == "location" && v.contains("48.8584"));
            let make = tags.iter().any(|(k, v)| k == "make" && v.starts_with("PaviseCam-"));
            assert!(location && make, "{name}: ffprobe reads no planted location: {tags:?}");
        }
    }

    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut oracle = Oracle::new();
    for (name, bytes) in &fixtures {
        let head = format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"");
        let (status, said) =
            send(&pavise, request("POST", "/api/v2/media", Some(&ct), multipart(&[(&head, bytes)]))).await;
        assert_eq!(status, 200, "{name}: {said}");
        let arrived = recorded_parts(&upstream.last()).await.remove(0).1;
        assert_eq!(arrived.len(), bytes.len(), "{name}: patched in place");
        oracle.clean(&arrived, &format!("arrived-{name}"));
        let path = oracle.files.last().unwrap().clone();
        let (tags, types) = ffprobe(&path);
        for (k, v) in &tags {
            let k = k.to_ascii_lowercase();
            let named =
                ["location", "make", "model", "date", "creation_time", "title"].iter().any(|n| k.starts_with(n));
            assert!(!named || v.is_empty(), "{name} arrived with {k} = {v}");
            assert!(!v.contains("48.8584") && !v.contains("PaviseCam"), "{name} arrived with {k} = {v}");
        }
        assert!(types.iter().all(|t| t == "video" || t == "audio"), "{name} arrived with streams {types:?}");
        let before = p(&format!("planted-{name}"));
        for streams in ["v", "a"] {
            assert_eq!(decoded(&before, streams), decoded(&path, streams), "{name}: the {streams} stream changed");
        }
    }
    pavise.stop().await;
    oracle.check();
}
