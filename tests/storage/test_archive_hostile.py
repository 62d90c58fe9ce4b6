"""Hostile layers: nothing is ever written outside dest, whatever the tar holds.

Each case of :mod:`tests.storage.hostile.corpus` runs in both whiteout modes; a
hypothesis property throws random archives (``..``, absolute names, symlinks and
hard links aiming at a watched directory, whiteouts) at the extractor. Every run
compares a listing of everything beside ``dest`` (and /etc/passwd) before and after.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criolib.errors import CriolibError
from criolib.storage import StorageError, apply_layer
from criolib.testing import require_root
from criolib.testing.strategies_tar import TarEntry, tar_archives, tar_bytes
from tests.storage.hostile.corpus import CASES, Box, Case
from tests.storage.hostile.watch import outside_listing

PARAMS = [pytest.param(case, mode, id=f"{case.id}-{mode}") for case in CASES
          for mode in case.modes]


def make_box(root: Path) -> Box:
    """dest, and beside it a planted ``outside`` tree and a sentinel file."""
    (root / "dest").mkdir()
    outside = root / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret\n")
    (outside / "target").write_bytes(b"target\n")
    os.link(outside / "secret", outside / "sub" / "secret-link")
    (root / "sentinel").write_bytes(b"sentinel\n")
    return Box(dest=root / "dest", outside=outside)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "mode"), PARAMS)
def test_hostile_case(case: Case, mode: str, tmp_path: Path) -> None:
    require_root()  # owners, devices and trusted.* xattrs need it
    box = make_box(tmp_path)
    before = outside_listing(tmp_path, box.dest)
    blob = case.tar(box)
    try:
        if case.expect is None:
            apply_layer(io.BytesIO(blob), box.dest, whiteouts=mode,  # type: ignore[arg-type]
                        allow_devices=case.allow_devices, same_owner=case.same_owner)
            if case.check is not None:
                case.check(box, mode)
        else:
            with pytest.raises(case.expect) as info:
                apply_layer(io.BytesIO(blob), box.dest, whiteouts=mode,  # type: ignore[arg-type]
                            allow_devices=case.allow_devices, same_owner=case.same_owner)
            assert "layer <stream>" in str(info.value)  # the message names the layer
    finally:
        assert outside_listing(tmp_path, box.dest) == before, "something outside dest changed"


def test_unsafe_archive_names_the_entry(tmp_path: Path) -> None:
    from criolib.storage import UnsafeArchive

    box = make_box(tmp_path)
    blob = tar_bytes([TarEntry(name=b"ok"), TarEntry(name=b"a/../../escape")])
    with pytest.raises(UnsafeArchive) as info:
        apply_layer(io.BytesIO(blob), box.dest, whiteouts="remove", same_owner=False)
    assert info.value.entry == "a/../../escape"
    assert "a/../../escape" in str(info.value) and "climbs above" in str(info.value)
    assert isinstance(info.value, ValueError)


# -- random archives ----------------------------------------------------------------------

_ROOT = Path(tempfile.gettempdir())


def _run_random(entries: Sequence[TarEntry], box: Box, root: Path, mode: str) -> None:
    before = outside_listing(root, box.dest)
    try:
        apply_layer(io.BytesIO(tar_bytes(entries)), box.dest, whiteouts=mode)  # type: ignore[arg-type]
    except StorageError:
        pass
    except CriolibError as exc:  # pragma: no cover - what the property forbids
        raise AssertionError(f"not a StorageError: {exc!r}") from exc
    assert outside_listing(root, box.dest) == before


# The watched directory's path is fixed for the whole run so that hypothesis can
# draw names that aim at it; each example gets a fresh box under it.
_FIXED = _ROOT / f"criolib-hostile-{os.getpid()}"
_OUTSIDE = os.fsencode(_FIXED / "box" / "outside")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=st.one_of(tar_archives(_OUTSIDE), tar_archives(_OUTSIDE, rare=False)),
       mode=st.sampled_from(["overlay", "remove"]))
def test_random_archives_stay_inside(entries: Sequence[TarEntry], mode: str) -> None:
    require_root()
    root = _FIXED / "box"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        _run_random(entries, make_box(root), root, mode)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def teardown_module() -> None:
    shutil.rmtree(_FIXED, ignore_errors=True)


_PAX_KEYS = [b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime", b"SCHILY.xattr.user.x",
             b"SCHILY.xattr.trusted.overlay.opaque", b"SCHILY.xattr.security.capability",
             b"SCHILY.xattr.", b"SCHILY.xattr.a\x00b", b"GNU.sparse.map", b"atime",
             b"hdrcharset"]
_PAX_VALUES = st.one_of(st.binary(max_size=12), st.integers(-(2**70), 2**70).map(
    lambda n: str(n).encode()), st.sampled_from([b"1.5", b"-0.1", b"1e9", b"../x", b"/",
                                                 b"a" * 5000]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.tuples(st.sampled_from(_PAX_KEYS), _PAX_VALUES), max_size=4),
       kind=st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "char"]),
       mode=st.sampled_from(["overlay", "remove"]))
def test_random_pax_records_raise_only_storage_errors(records: list[tuple[bytes, bytes]],
                                                     kind: str, mode: str) -> None:
    require_root()
    entries = [TarEntry(name=b"t", data=b"target"),
               TarEntry(name=b"e", kind=kind, link=b"t", data=b"data", pax=tuple(records))]
    with tempfile.TemporaryDirectory(dir=_ROOT) as where:
        root = Path(where)
        box = make_box(root)
        _run_random(entries, box, root, mode)
