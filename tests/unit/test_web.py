"""make web's demo token: reused while the gateway takes it, else a new demo user's, kept private."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tools import web

TOKEN = "0123456789abcdef." + "s" * 43


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path)


def test_a_saved_token_the_gateway_takes_is_reused(settings, monkeypatch):
    (settings.secrets_dir).mkdir(parents=True)
    (settings.secrets_dir / "web-demo-token").write_text(TOKEN + "\n")
    monkeypatch.setattr(web, "accepted", lambda url, token: token == TOKEN)
    monkeypatch.setattr(web, "add_user", lambda name: pytest.fail("no new user while the saved token works"))
    assert web.demo_token(settings, "http://gateway") == TOKEN


@pytest.mark.parametrize("saved", [None, "fedcba9876543210." + "x" * 43])
def test_without_a_working_token_a_new_demo_user_is_made_and_its_token_kept_private(settings, monkeypatch, saved):
    if saved is not None:
        settings.secrets_dir.mkdir(parents=True)
        (settings.secrets_dir / "web-demo-token").write_text(saved)
    made = []
    monkeypatch.setattr(web, "accepted", lambda url, token: False)
    monkeypatch.setattr(web, "add_user", lambda name: made.append(name) or TOKEN)
    assert web.demo_token(settings, "http://gateway") == TOKEN
    assert len(made) == 1 and made[0].startswith("demo-")
    path = settings.secrets_dir / "web-demo-token"
    assert path.read_text().strip() == TOKEN and path.stat().st_mode & 0o077 == 0


def test_the_token_is_found_in_what_users_add_prints():
    printed = f"{TOKEN}\n"  # stdout: the token alone (what else it says goes to stderr)
    assert web.TOKEN.findall(printed) == [TOKEN]
