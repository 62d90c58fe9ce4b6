"""auth.json / docker config.json: lookup order, key matching, login/logout, helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from criolib.image._credentials import (
    AuthFile,
    Credentials,
    auth_file_paths,
    default_auth_file,
    get_credentials,
    login,
    logout,
)
from criolib.image._errors import CredentialsError, InvalidReference, UnsupportedCredentialHelper
from criolib.image._reference import parse_normalized, parse_reference


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG_RUNTIME_DIR; no variable from the machine leaks in."""
    for var in ("REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_lookup_order(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """containers-auth.json(5): primary, $XDG_CONFIG_HOME, docker config.json, ~/.dockercfg."""
    assert auth_file_paths() == [
        AuthFile(env / "run/containers/auth.json"),
        AuthFile(env / "home/.config/containers/auth.json"),
        AuthFile(env / "home/.docker/config.json"),
        AuthFile(env / "home/.dockercfg", legacy=True),
    ]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env / "xdg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(env / "dockercfg"))
    assert [f.path for f in auth_file_paths()][1:3] == [env / "xdg/containers/auth.json",
                                                       env / "dockercfg/config.json"]
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert auth_file_paths()[0].path == Path(f"/run/containers/{os.getuid()}/auth.json")
    assert default_auth_file() == Path(f"/run/containers/{os.getuid()}/auth.json")
    # A $XDG_RUNTIME_DIR that does not exist is skipped, not fatal.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env / "missing"))
    assert auth_file_paths()[0].path == env / "xdg/containers/auth.json"


def test_explicit_file_is_the_only_one(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(env / "home/.docker/config.json", {"auths": {"quay.io": auth("docker", "pw")}})
    mine = write(env / "mine.json", {"auths": {}})
    assert auth_file_paths(auth_file=mine) == [AuthFile(mine)]
    assert get_credentials("quay.io", auth_file=mine) is None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(mine))
    assert default_auth_file() == mine
    assert auth_file_paths() == [AuthFile(mine)]
    assert get_credentials("quay.io") is None


def test_first_file_with_a_match_wins(env: Path) -> None:
    write(env / "run/containers/auth.json", {"auths": {"other.io": auth("a", "b")}})
    write(env / "home/.config/containers/auth.json", {"auths": {"quay.io": auth("xdg", "1")}})
    write(env / "home/.docker/config.json", {"auths": {"quay.io": auth("docker", "2")}})
    creds = get_credentials("quay.io")
    assert creds == Credentials("xdg", "1")
    assert creds is not None and creds.source == str(env / "home/.config/containers/auth.json")


def test_man_page_namespaced_keys(env: Path) -> None:
    """my-registry.local/namespace/user/image is looked up from the most specific key."""
    keys = {
        "my-registry.local/foo/bar/image": auth("image", "1"),
        "my-registry.local/foo": auth("foo", "2"),
        "my-registry.local": auth("host", "3"),
    }
    write(env / "run/containers/auth.json", {"auths": keys})

    def user(ref: str) -> str | None:
        creds = get_credentials(parse_reference(ref))
        return None if creds is None else creds.username

    assert user("my-registry.local/foo/bar/image:latest") == "image"
    assert user("my-registry.local/foo/bar/other:latest") == "foo"
    assert user("my-registry.local/foo/x@sha256:" + "a" * 64) == "foo"
    assert user("my-registry.local/bar/image") == "host"
    assert user("my-registry.local/foobar/image") == "host"  # whole path segments only
    assert get_credentials("my-registry.local/foo") == Credentials("foo", "2")
    assert get_credentials("other.local") is None


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io",
                                 "registry-1.docker.io", "docker.io", "http://index.docker.io"])
def test_docker_hub_keys(env: Path, key: str) -> None:
    write(env / "home/.docker/config.json", {"auths": {key: auth("hub", "pw")}})
    assert get_credentials(parse_normalized("busybox")) == Credentials("hub", "pw")
    assert get_credentials("docker.io") == Credentials("hub", "pw")


def test_url_keys_and_legacy_dockercfg(env: Path) -> None:
    write(env / "home/.docker/config.json",
          {"auths": {"http://localhost:5000/v2/": auth("local", "pw")}})
    assert get_credentials("localhost:5000") == Credentials("local", "pw")
    write(env / "home/.dockercfg", {"https://legacy.io/v1/": auth("old", "pw")})
    assert get_credentials("legacy.io/ns/repo") == Credentials("old", "pw")


def test_identity_token_and_nul_padding(env: Path) -> None:
    write(env / "run/containers/auth.json", {"auths": {
        "quay.io": {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": "xyzzy"},
        "pad.io": {"auth": base64.b64encode(b"u:p\x00\x00").decode()},
    }})
    creds = get_credentials("quay.io")
    assert creds == Credentials("<token>", "", "xyzzy")
    assert get_credentials("pad.io") == Credentials("u", "p")
    assert "xyzzy" not in repr(creds) and "password" not in repr(Credentials("u", "secret"))
    assert "secret" not in repr(Credentials("u", "secret"))


def test_empty_entry_falls_through_to_the_next_file(env: Path) -> None:
    write(env / "run/containers/auth.json", {"auths": {"quay.io": {}}})
    write(env / "home/.docker/config.json", {"auths": {"quay.io": auth("d", "p")}})
    assert get_credentials("quay.io") == Credentials("d", "p")


def test_auth_without_colon_is_ignored(env: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(env / "run/containers/auth.json",
          {"auths": {"quay.io": {"auth": base64.b64encode(b"nocolonsecret").decode()}}})
    assert get_credentials("quay.io") is None
    assert "no ':'" in caplog.text and "nocolonsecret" not in caplog.text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1]", "JSON object"),
    ('{"auths": []}', "'auths' must be an object"),
    ('{"auths": {"quay.io": "x"}}', "'auths' must be an object of objects"),
    ('{"auths": {"quay.io": {"auth": "%%%secret%%%"}}}', "not base64"),
    ('{"auths": {"quay.io": {"auth": 1}}}', "must be strings"),
    ('{"credHelpers": {"quay.io": 1}}', "'credHelpers' must be an object of strings"),
])
def test_bad_files_name_the_file(env: Path, content: str, message: str) -> None:
    path = write(env / "run/containers/auth.json", content)
    with pytest.raises(CredentialsError, match=message) as info:
        get_credentials("quay.io")
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert "secret" not in str(info.value)


def test_null_sections_are_empty(env: Path) -> None:
    write(env / "run/containers/auth.json", '{"auths": null, "credHelpers": null}')
    assert get_credentials("quay.io") is None


def test_cred_helpers_are_reported_not_run(env: Path) -> None:
    path = write(env / "run/containers/auth.json", {
        "auths": {"localhost:5001": {}}, "credHelpers": {"registry.example.com": "secretservice"}})
    with pytest.raises(UnsupportedCredentialHelper, match="docker-credential-secretservice") \
            as info:
        get_credentials(parse_reference("registry.example.com/ns/app:1"))
    assert (info.value.helper, info.value.registry, info.value.path) == (
        "secretservice", "registry.example.com", str(path))
    assert get_credentials("localhost:5001") is None


def test_creds_store_is_reported_where_it_holds_the_secret(env: Path) -> None:
    write(env / "home/.docker/config.json",
          {"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "desktop"})
    with pytest.raises(UnsupportedCredentialHelper, match="credsStore docker-credential-desktop"):
        get_credentials("docker.io")
    # A host Docker never logged in to: nothing to find, and no helper to blame.
    assert get_credentials("quay.io") is None


def test_registries_conf_credential_helpers(env: Path) -> None:
    write(env / "run/containers/auth.json", {"auths": {"quay.io": auth("u", "p")}})
    files_first = ["containers-auth.json", "pass"]
    assert get_credentials("quay.io", credential_helpers=files_first) == Credentials("u", "p")
    with pytest.raises(UnsupportedCredentialHelper,
                       match=r"credential-pass for other\.io after the auth files"):
        get_credentials("other.io", credential_helpers=files_first)
    with pytest.raises(UnsupportedCredentialHelper, match="docker-credential-secretservice"):
        get_credentials("quay.io", credential_helpers=["secretservice", "containers-auth.json"])
    with pytest.raises(UnsupportedCredentialHelper):
        login("quay.io", "u", "p", credential_helpers=["secretservice"])


@pytest.mark.parametrize("key, problem", [
    ("https://quay.io", "http"), ("quay.io/a@sha256:x", "'@'"), ("quay.io/a:tag", "':'"),
    ("", "empty"),
])
def test_invalid_keys(env: Path, key: str, problem: str) -> None:
    with pytest.raises(InvalidReference, match=problem):
        get_credentials(key)
    assert get_credentials("localhost:5000/ns") is None  # a port before the slash is fine
    with pytest.raises(InvalidReference, match="registry domain"):
        get_credentials(parse_reference("busybox"))


def test_login_writes_atomically_keeping_everything_else(env: Path) -> None:
    path = write(env / "run/containers/auth.json", {
        "auths": {"other.io": auth("o", "p")},
        "credHelpers": {"helped.io": "pass"},
        "HttpHeaders": {"User-Agent": "x"},
    })
    assert login("quay.io/ns", "user", "pa:ss") == path
    data = json.loads(path.read_text())
    assert data["auths"]["quay.io/ns"] == {"auth": base64.b64encode(b"user:pa:ss").decode()}
    assert data["auths"]["other.io"] == auth("o", "p")
    assert data["credHelpers"] == {"helped.io": "pass"}
    assert data["HttpHeaders"] == {"User-Agent": "x"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert get_credentials(parse_reference("quay.io/ns/app")) == Credentials("user", "pa:ss")
    assert [p.name for p in path.parent.iterdir()] == ["auth.json"]  # no temp files left
    with pytest.raises(UnsupportedCredentialHelper, match=r"helped\.io"):
        login("helped.io", "u", "p")


def test_login_creates_the_file_and_its_directory(env: Path, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    target = env / "new/dir/auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(target))
    assert login("localhost:5000", "u", "p") == target
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700
    assert get_credentials("localhost:5000") == Credentials("u", "p")
    explicit = env / "explicit.json"
    login("quay.io", "x", "y", auth_file=explicit)
    assert json.loads(explicit.read_text())["auths"]["quay.io"] == auth("x", "y")


def test_logout(env: Path) -> None:
    path = env / "run/containers/auth.json"
    assert logout("quay.io") is False  # no file
    login("quay.io", "u", "p")
    login("quay.io/ns", "u2", "p2")
    assert logout("quay.io") is True
    assert logout("quay.io") is False
    assert json.loads(path.read_text())["auths"] == {"quay.io/ns": auth("u2", "p2")}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write(path, {"auths": {}, "credHelpers": {"quay.io": "pass"}})
    with pytest.raises(UnsupportedCredentialHelper):
        logout("quay.io")
