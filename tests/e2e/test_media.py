"""A member's phone photo through a real Mastodon client: the instance gets it without location.

Mastodon.py's `media_post` uploads a JPEG that carries EXIF GPS, XMP GPS and an IPTC
city (made at test time with ImageMagick and exiftool) through pavise to mastodon-mock.
exiftool, reading the file the instance stored, is the oracle. A truncated file is
refused with 422 and never reaches the instance.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from mastodon import MastodonAPIError


@pytest.fixture(scope="module")
def gps_jpeg(tmp_path_factory) -> bytes:
    for tool in ("convert", "exiftool"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/deps"
    d = tmp_path_factory.mktemp("media")
    path = d / "phone.jpg"
    subprocess.run(["convert", "-size", "64x48", "gradient:red-blue", str(path)], check=True)
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original",
         "-GPSLatitude=39.9042", "-GPSLatitudeRef=N", "-GPSLongitude=116.4074", "-GPSLongitudeRef=E",
         "-XMP:GPSLatitude=39.9042 N", "-XMP:GPSLongitude=116.4074 E", "-IPTC:City=Beijing",
         "-Orientation#=6", str(path)],
        check=True,
    )
    tags = _location_tags(path.read_bytes(), d)
    assert tags, "the fixture must carry location, or this test proves nothing"
    return path.read_bytes()


def _location_tags(data: bytes, workdir: Path) -> dict:
    probe = workdir / "probe.bin"
    probe.write_bytes(data)
    out = subprocess.run(["exiftool", "-j", "-ee", "-a", "-G1", str(probe)], check=True, capture_output=True, text=True)
    tags = json.loads(out.stdout)[0]
    return {k: v for k, v in tags.items() if "GPS" in k or k.endswith(":City") or "Location" in k}


def _stored_jpegs(mock) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in mock.media_dir.rglob("*") if p.is_file() and p.read_bytes()[:2] == b"\xff\xd8"}


def test_media_post_arrives_without_location(mastodon_app, mastodon_mock, gps_jpeg, tmp_path):
    before = set(_stored_jpegs(mastodon_mock))
    media = mastodon_app.media_post(gps_jpeg, mime_type="image/jpeg", file_name="IMG_0001.jpg", synchronous=True)
    assert media.type == "image", media
    new = {p: b for p, b in _stored_jpegs(mastodon_mock).items() if p not in before}
    assert new, "the upload reached the instance"
    for path, data in new.items():
        assert _location_tags(data, tmp_path) == {}, f"{path} still carries location"
        assert b"Beijing" not in data
        # Orientation survives, so the photo is not shown sideways.
        probe = tmp_path / "o.jpg"
        probe.write_bytes(data)
        orient = subprocess.run(["exiftool", "-n", "-s3", "-Orientation", str(probe)], capture_output=True, text=True)
        assert orient.stdout.strip() == "6"


def test_malformed_upload_is_refused_and_nothing_arrives(mastodon_app, mastodon_mock, gps_jpeg):
    before = {p for p in mastodon_mock.media_dir.rglob("*") if p.is_file()}
    truncated = gps_jpeg[: len(gps_jpeg) // 3]
    with pytest.raises(MastodonAPIError) as refused:
        mastodon_app.media_post(truncated, mime_type="image/jpeg", file_name="broken.jpg")
    assert "422" in str(refused.value), refused.value
    after = {p for p in mastodon_mock.media_dir.rglob("*") if p.is_file()}
    assert after == before, "a refused upload must not reach the instance"


def test_video_with_gps_inside_its_frames_arrives_without_it(mastodon_app, mastodon_mock, tmp_path):
    """The third media red-team pass: a dashcam `freeGPS` block in the user-data SEI of
    the first H.264 frame (Mastodon's passthrough copies frames as they are). The
    instance gets a video that still decodes, and exiftool -ee finds no position in it."""
    assert shutil.which("ffmpeg"), "ffmpeg is missing: run scripts/deps"
    clip = tmp_path / "dashcam.mp4"
    subprocess.run(
        # Large enough (about 95 KB) for the block's stated length to fit in mdat, as exiftool requires.
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "3",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1M", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    data = bytearray(clip.read_bytes())
    # NextBase-style block (lat 48.8584, lon 2.2945, 2024-06-04 14:02:05Z) over x264's SEI text, in place.
    block = bytearray(b"\x00\x01\x01\x00freeGPS " + b"x" * (0x50 - 12))
    block[0x32:0x32 + 20] = struct.pack(">HHHBBBBHBii", 0x0101, 0x0101, 2024, 6, 4, 14, 2, 0x32, 2, 488584000, 22945000)
    at = data.index(b"x264 - core")
    data[at:at + len(block)] = block
    assert _location_tags(bytes(data), tmp_path), "the fixture must carry GPS in its frame, or this test proves nothing"
    before = {p for p in mastodon_mock.media_dir.rglob("*") if p.is_file()}
    mastodon_app.media_post(bytes(data), mime_type="video/mp4", file_name="dashcam.mp4", synchronous=True)
    new = [p for p in mastodon_mock.media_dir.rglob("*") if p.is_file() and p not in before]
    assert new, "the upload reached the instance"
    for path in new:
        stored = path.read_bytes()
        assert _location_tags(stored, tmp_path) == {}, f"{path} still carries GPS"
        assert b"freeGPS" not in stored and len(stored) == len(data)
        decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
        assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    # The same frames under a fourcc ffmpeg also decodes as H.264 (GeoVision's `GAVC`) are walked too.
    entry = data.index(b"avc1", data.index(b"stsd"))
    data[entry:entry + 4] = b"GAVC"
    before = {p for p in mastodon_mock.media_dir.rglob("*") if p.is_file()}
    mastodon_app.media_post(bytes(data), mime_type="video/mp4", file_name="cctv.mp4", synchronous=True)
    renamed = [p for p in mastodon_mock.media_dir.rglob("*") if p.is_file() and p not in before]
    assert renamed and all(_location_tags(p.read_bytes(), tmp_path) == {} for p in renamed), renamed
