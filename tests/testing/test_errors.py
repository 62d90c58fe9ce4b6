"""Odd input to the test bed gives its own errors, which are also the builtin a caller expects."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from criolib.errors import CriolibError
from criolib.testing import (
    Entry,
    ImageBuildError,
    MissingHostPart,
    RegistryAuth,
    RegistryServer,
    TestbedError,
    TestbedValueError,
    TokenServer,
    write_layer,
)
from criolib.testing._layout import OCILayoutWriter, is_sha256_digest
from criolib.testing._registry import htpasswd_lines

GOOD = "sha256:" + "0123456789abcdef" * 4


def _value_error(info: pytest.ExceptionInfo[TestbedValueError]) -> None:
    assert type(info.value) is TestbedValueError
    assert isinstance(info.value, ValueError) and isinstance(info.value, CriolibError)


@pytest.mark.parametrize("kwargs, match", [
    ({"auth": "bogus"}, "registry auth must be"),
    ({"token_ttl": 0}, "token ttl"),
    ({"token_ttl": True}, "token ttl"),
    ({"port": 0}, "port must be 1..65535"),
    ({"port": 70000}, "port must be 1..65535"),
    ({"users": {"a:b": "pw"}}, "no ':'"),
    ({"users": {"a": 1}}, "str passwords"),
])
def test_registry_server_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(TestbedValueError, match=match) as info:
        RegistryServer(**kwargs)
    _value_error(info)


@pytest.mark.parametrize("kwargs, match", [
    ({"ttl": 0}, "ttl must be an int of at least 1"),
    ({"ttl": 2.5}, "ttl must be an int"),
    ({"acl": {"reader": "pull"}}, r"acl\['reader'\] must be a collection"),
    ({"users": {"a": None}}, "str passwords"),
])
def test_token_server_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(TestbedValueError, match=match) as info:
        TokenServer(**kwargs)
    _value_error(info)


@pytest.mark.parametrize("args, match", [
    (("user", None), "both username and password"),
    ((None, "pw"), "both username and password"),
    (("us:er", "pw"), "contains ':'"),
    ((1, "pw"), "username must be a str"),
])
def test_registry_auth_arguments(args: tuple[Any, Any], match: str) -> None:
    with pytest.raises(TestbedValueError, match=match) as info:
        RegistryAuth(*args)
    _value_error(info)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "x"}, "kind 'x' is not one of"),
    ({"data": iter([b"chunk"])}, "needs size= set"),
    ({"data": "text"}, "data must be bytes"),
    ({"data": [b"x"], "size": -1}, "negative size"),
])
def test_layer_entry_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(TestbedValueError, match=match) as info:
        Entry("some/file", **kwargs)
    _value_error(info)


def test_layer_compression_argument() -> None:
    with pytest.raises(TestbedValueError, match="compression must be one of") as info:
        write_layer([Entry("f")], io.BytesIO(), "brotli")  # type: ignore[arg-type]
    _value_error(info)


def test_streamed_entry_with_size_is_fine() -> None:
    out = io.BytesIO()
    write_layer([Entry("f", data=iter([b"ab", b"c"]), size=3)], out, "none")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        member = tar.extractfile("f")
        assert member is not None and member.read() == b"abc"


# -- digests: sha256 and 64 lowercase hex, nothing else (STYLE.md) --------------------------


@pytest.mark.parametrize("digest", [
    GOOD.upper().replace("SHA256", "sha256"),  # uppercase hex
    GOOD[:-1],  # 63 digits
    GOOD + "0",  # 65 digits
    "sha512:" + "0" * 128,
    "sha256:" + "0" * 63 + "g",
    GOOD + "\n",
    "sha256:../../../../etc/passwd",
])
def test_layout_writer_refuses_other_digests(tmp_path: Path, digest: str) -> None:
    assert not is_sha256_digest(digest)
    with pytest.raises(ImageBuildError, match="unsupported digest"):
        OCILayoutWriter(tmp_path).blob_path(digest)


def test_layout_writer_takes_a_sha256_digest(tmp_path: Path) -> None:
    assert is_sha256_digest(GOOD)
    assert OCILayoutWriter(tmp_path).blob_path(GOOD) == tmp_path / "blobs" / "sha256" / GOOD[7:]


# -- the ``testing`` extra --------------------------------------------------------------------


@pytest.mark.parametrize("package", ["zstandard", "bcrypt", "cryptography"])
def test_a_missing_python_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes ``import package`` fail
    with pytest.raises(MissingHostPart) as info:
        if package == "zstandard":
            write_layer([Entry("f")], io.BytesIO(), "zstd")
        elif package == "bcrypt":
            htpasswd_lines({"tester": "pw"})
        else:
            TokenServer().start()
    assert isinstance(info.value, TestbedError)
    assert "pip install 'criolib[testing]'" in str(info.value)
    assert repr(package) in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)
