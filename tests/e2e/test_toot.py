"""The `toot` command-line client through pavise: a second, independent real client.

`toot login` is the browser flow: it prints an authorize link and asks for the code;
mastodon-mock's code `mockcode_<username>` stands in for clicking "Authorize".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOT = Path(sys.executable).with_name("toot")


def toot(config_home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([str(TOOT), *args], input=stdin, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def toot_home(tmp_path: Path, pavise) -> Path:
    if not TOOT.exists():
        pytest.fail(f"toot is not installed in the venv ({TOOT}); run scripts/deps")
    home = tmp_path / "toot-config"
    # Decline the browser, then paste the code.
    out = toot(home, "login", "--instance", pavise.url, stdin="n\nmockcode_bob\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully logged in" in out.stdout, out.stdout
    return home


def test_toot_posts_and_reads_through_pavise(toot_home, mastodon_mock, pavise):
    before = len(mastodon_mock.requests())
    out = toot(toot_home, "post", "tooted through pavise")
    assert out.returncode == 0, out.stdout + out.stderr

    out = toot(toot_home, "timelines", "home", "--limit", "5", "--no-pager", "--no-clear")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tooted through pavise" in out.stdout, out.stdout

    out = toot(toot_home, "whoami")
    assert out.returncode == 0 and "bob" in out.stdout, out.stdout + out.stderr

    # Every one of toot's requests went through pavise and arrived with a pseudonym.
    seen = mastodon_mock.requests()[before:]
    assert seen
    assert all(dict(r["headers"]).get("x-forwarded-for", "").startswith("2001:db8:") for r in seen)
    assert all(dict(r["headers"]).get("host") == f"127.0.0.1:{pavise.port}" for r in seen)
