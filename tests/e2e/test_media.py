"""A member's phone photo through a real Mastodon client: the instance gets it without location.

Mastodon.py's `media_post` uploads a JPEG that carries EXIF GPS, XMP GPS and an IPTC
city (made at test time with ImageMagick and exiftool) through pavise to mastodon-mock.
exiftool, reading the file the instance stored, is the oracle. A truncated file is
refused with 422 and never reaches the instance.
"""

from __future__ import annotations

import json
import shutil
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
