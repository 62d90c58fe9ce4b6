"""The CRI ImageService against the real registry of the test bed and a real Store.

Every test has its own overlay store under ``tmp_path`` (closed and unmounted after),
its own policy.json and registries.conf: a mirror (``mirror.invalid/testbed`` served
by the local registry), an alias (``criolib-alias-bb``) and the local registry as
the unqualified-search registry; the registry is plain HTTP, made usable through
``insecure_registries``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import criolib.service._images as images_module
from criolib.image import Credentials, RegistriesConf
from criolib.service._config import Config, ImageConfig
from criolib.service._cri_types import (
    AuthConfig,
    ImageFilter,
    ImageFsInfoRequest,
    ImageSpec,
    ImageStatusRequest,
    ListImagesRequest,
    PodSandboxConfig,
    PodSandboxMetadata,
    PullImageRequest,
    RemoveImageRequest,
)
from criolib.service._errors import FailedPrecondition, InvalidRequest, NotFound, ServiceError
from criolib.service._images import ImageService, PullFailed
from criolib.service._images_lookup import credentials_from_auth, user_of, with_insecure
from criolib.storage import Store
from criolib.testing import RegistryServer, TestImages, require_root
from tests.image.copy_support import unmount_under

pytestmark = pytest.mark.integration

ALIAS = "criolib-alias-bb"
MIRRORED = "mirror.invalid/testbed"


def _registries_conf(host: str) -> str:
    return f"""
unqualified-search-registries = ["{host}"]

[[registry]]
prefix = "{MIRRORED}"
location = "{MIRRORED}"
[[registry.mirror]]
location = "{host}/testbed"

[aliases]
"{ALIAS}" = "{MIRRORED}/busybox"
"""


@attrs.define
class Bed:
    service: ImageService
    store: Store
    host: str
    config: Config
    root: Path


@contextlib.contextmanager
def _bed(tmp_path: Path, registry: RegistryServer, **image: Any) -> Iterator[Bed]:
    require_root()
    (tmp_path / "registries.conf").write_text(_registries_conf(registry.host))
    (tmp_path / "policy.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    settings: dict[str, Any] = {
        "signature_policy": str(tmp_path / "policy.json"),
        "registries_conf": str(tmp_path / "registries.conf"),
        "insecure_registries": (registry.host,),
        # An empty auth file: the host's own credentials never take part.
        "global_auth_file": str(tmp_path / "auth.json"),
    }
    (tmp_path / "auth.json").write_text('{"auths": {}}')
    settings.update(image)
    config = attrs.evolve(Config.for_root(tmp_path / "svc"), image=ImageConfig(**settings))
    store = Store(config.root, config.runroot, config.storage_driver)
    try:
        yield Bed(ImageService(config, store), store, registry.host, config, tmp_path)
    finally:
        with contextlib.suppress(Exception):
            store.shutdown(force=True)
        store.close()
        unmount_under(tmp_path)
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines()
                if str(tmp_path) in line]


@pytest.fixture
def bed(tmp_path: Path, criolib_registry: RegistryServer) -> Iterator[Bed]:
    with _bed(tmp_path, criolib_registry) as b:
        yield b


def pull(service: ImageService, image: str, auth: AuthConfig | None = None) -> str:
    return service.pull_image(PullImageRequest(image=ImageSpec(image=image), auth=auth)
                              ).image_ref


def status(service: ImageService, image: str, verbose: bool = False) -> Any:
    return service.image_status(ImageStatusRequest(image=ImageSpec(image=image),
                                                   verbose=verbose))


def remove(service: ImageService, image: str) -> None:
    service.remove_image(RemoveImageRequest(image=ImageSpec(image=image)))


def listed(service: ImageService, image: str = "") -> list[Any]:
    flt = ImageFilter(image=ImageSpec(image=image)) if image else None
    return service.list_images(ListImagesRequest(filter=flt)).images


# -- pulling, listing, status -------------------------------------------------------------


def test_pull_by_tag_then_find_it_by_every_reference_form(
        bed: Bed, criolib_test_images: TestImages) -> None:
    busybox = criolib_test_images["busybox"]
    name = f"{bed.host}/{busybox.reference}"
    assert busybox.config_digest is not None
    image_id = pull(bed.service, name)
    assert image_id == busybox.config_digest.removeprefix("sha256:")

    [image] = listed(bed.service)
    assert image.id == image_id
    assert image.repo_tags == [name]
    assert image.repo_digests == [f"{bed.host}/testbed/busybox@{busybox.digest}"]
    layers = bed.store.image_layers(image_id)
    stored = bed.store.image(image_id)
    assert image.size == (sum(lay.uncompressed_size or 0 for lay in layers)
                          + sum(stored.big_data_sizes.values()))
    assert image.size > 1_000_000  # busybox itself
    assert image.uid is None and image.username == "" and not image.pinned

    forms = [image_id, image_id[:12], f"sha256:{image_id}", name,
             f"{bed.host}/testbed/busybox@{busybox.digest}",
             "testbed/busybox",          # short name: the unqualified-search registry
             "testbed/busybox:latest", busybox.digest]
    for form in forms:
        found = status(bed.service, form).image
        assert found is not None, form
        assert found.id == image_id, form
        assert [i.id for i in listed(bed.service, form)] == [image_id], form
        assert bed.service.resolve_image(form).id == image_id, form

    for absent in [f"{bed.host}/testbed/busybox:other", "testbed/nothing", "0" * 64,
                   "fedcba98", f"{bed.host}/testbed/busybox@sha256:{'1' * 64}"]:
        assert status(bed.service, absent).image is None, absent
        assert listed(bed.service, absent) == []
        with pytest.raises(NotFound, match="not found"):
            bed.service.resolve_image(absent)

    config = json.loads((criolib_test_images.layout / "blobs" / "sha256" /
                         image_id).read_bytes())
    assert bed.service.image_config(image_id) == config
    verbose = status(bed.service, name, verbose=True)
    assert json.loads(verbose.info["info"])["imageSpec"] == config
    assert status(bed.service, name).info == {}


def test_bad_references_are_invalid_requests(bed: Bed) -> None:
    for bad in ["", "UPPER/Case", "a b", "host:port:bad/x"]:
        with pytest.raises(InvalidRequest) as info:
            status(bed.service, bad)
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(InvalidRequest):
            pull(bed.service, bad)
        with pytest.raises(InvalidRequest):
            remove(bed.service, bad)
    with pytest.raises(InvalidRequest, match="no image specified"):
        bed.service.pull_image(PullImageRequest())
    with pytest.raises(InvalidRequest, match="image id"):
        pull(bed.service, "a" * 64)  # an id cannot be pulled


def test_pull_by_digest_names_the_image_repo_at_digest(
        bed: Bed, criolib_test_images: TestImages) -> None:
    multilayer = criolib_test_images["multilayer"]
    by_digest = f"{bed.host}/testbed/multilayer@{multilayer.digest}"
    # A tag next to the digest is dropped, as containers/image drops it.
    image_id = pull(bed.service, f"{bed.host}/testbed/multilayer:ignored@{multilayer.digest}")
    assert multilayer.config_digest == f"sha256:{image_id}"
    [image] = listed(bed.service)
    assert image.repo_tags == []
    assert image.repo_digests == [by_digest]
    assert status(bed.service, by_digest).image.id == image_id
    assert len(bed.store.image_layers(image_id)) == len(multilayer.layers)


def test_pull_an_index_stores_this_platform_instance(
        bed: Bed, criolib_test_images: TestImages) -> None:
    multiarch = criolib_test_images["multiarch"]
    image_id = pull(bed.service, f"{bed.host}/{multiarch.reference}")
    config = bed.service.image_config(image_id)
    assert config["config"]["Cmd"] == ["cat", "/etc/criolib-platform"]
    assert f"sha256:{image_id}" in {i.config_digest for i in multiarch.instances}


def test_short_names_through_an_alias_a_mirror_and_search_registries(
        bed: Bed, criolib_test_images: TestImages) -> None:
    image_id = pull(bed.service, ALIAS)  # alias -> mirror.invalid/testbed/busybox -> mirror
    busybox = criolib_test_images["busybox"]
    assert busybox.config_digest == f"sha256:{image_id}"
    [image] = listed(bed.service)
    assert image.repo_tags == [f"{MIRRORED}/busybox:latest"]
    assert image.repo_digests == [f"{MIRRORED}/busybox@{busybox.digest}"]
    assert status(bed.service, ALIAS).image.id == image_id
    assert status(bed.service, f"{ALIAS}:latest").image.id == image_id

    # A fully qualified name under the mirrored prefix, by digest.
    multilayer = criolib_test_images["multilayer"]
    digest_id = pull(bed.service, f"{MIRRORED}/multilayer@{multilayer.digest}")
    assert status(bed.service, f"{MIRRORED}/multilayer@{multilayer.digest}").image.id == \
        digest_id

    # A short name through unqualified-search-registries: stored under the candidate.
    search_id = pull(bed.service, "testbed/multilayer-zstd")
    assert status(bed.service, f"{bed.host}/testbed/multilayer-zstd:latest").image.id == \
        search_id
    # Same config as multilayer (only the compression differs): the same image, named twice.
    assert search_id == digest_id
    assert len(listed(bed.service)) == 2
    found = status(bed.service, search_id).image
    assert found.repo_tags == [f"{bed.host}/testbed/multilayer-zstd:latest"]
    assert f"{MIRRORED}/multilayer@{multilayer.digest}" in found.repo_digests
    # Like CRI-O (makeRepoDigests), a tag's repository is paired with the image's first
    # manifest digest: the store does not record which name came with which manifest.
    assert f"{bed.host}/testbed/multilayer-zstd@{multilayer.digest}" in found.repo_digests
    zstd = criolib_test_images["multilayer-zstd"]
    assert status(bed.service, f"{bed.host}/testbed/multilayer-zstd@{zstd.digest}"
                  ).image.id == search_id


def test_pull_errors_name_the_reference(bed: Bed) -> None:
    missing = f"{bed.host}/testbed/busybox:no-such-tag"
    with pytest.raises(NotFound, match="no-such-tag") as info:
        pull(bed.service, missing)
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(NotFound, match="testbed/nothing-here"):
        pull(bed.service, f"{bed.host}/testbed/nothing-here:latest")
    with pytest.raises(NotFound, match="testbed/nothing-here"):
        pull(bed.service, "testbed/nothing-here")  # via the search registry
    assert listed(bed.service) == []


def test_short_name_without_alias_or_search_registry_is_refused(
        tmp_path: Path, criolib_registry: RegistryServer) -> None:
    conf = tmp_path / "bare.conf"
    conf.write_text("")
    with _bed(tmp_path, criolib_registry, registries_conf=str(conf)) as bed:
        with pytest.raises(InvalidRequest, match="unqualified-search"):
            pull(bed.service, "testbed/busybox")
        # A lookup still tries the Docker spelling, and finds nothing.
        assert status(bed.service, "testbed/busybox").image is None


def test_policy_json_is_honoured(tmp_path: Path, criolib_registry: RegistryServer) -> None:
    policy = tmp_path / "reject.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}]}))
    with _bed(tmp_path, criolib_registry, signature_policy=str(policy)) as bed:
        name = f"{bed.host}/testbed/busybox:latest"
        with pytest.raises(PullFailed, match="rejected by policy") as info:
            pull(bed.service, name)
        assert name in str(info.value) and info.value.code == "UNKNOWN"
        policy.unlink()
        with pytest.raises(FailedPrecondition, match=r"reject\.json"):
            pull(bed.service, name)
        assert listed(bed.service) == []


def test_sandbox_config_is_only_logged(bed: Bed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="criolib.service")
    sandbox = PodSandboxConfig(metadata=PodSandboxMetadata(name="web", namespace="prod"))
    ref = bed.service.pull_image(PullImageRequest(
        image=ImageSpec(image=f"{bed.host}/testbed/busybox:latest"),
        sandbox_config=sandbox)).image_ref
    assert status(bed.service, ref).image is not None
    assert "for pod prod/web" in caplog.text


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize("registry_fixture", ["criolib_registry_basic", "criolib_registry_token"])
def test_pull_with_cri_auth_config(registry_fixture: str, request: pytest.FixtureRequest,
                                   tmp_path: Path) -> None:
    registry: RegistryServer = request.getfixturevalue(registry_fixture)
    assert registry.credentials is not None
    user, password = registry.credentials
    with _bed(tmp_path, registry) as bed:
        name = f"{bed.host}/testbed/busybox:latest"
        with pytest.raises(PullFailed, match="testbed/busybox") as anonymous:
            pull(bed.service, name)
        assert anonymous.value.code == "UNKNOWN"

        with pytest.raises(PullFailed, match="testbed/busybox") as wrong:
            pull(bed.service, name, AuthConfig(username=user, password="wrong"))
        assert "401" in str(wrong.value) or "nauthorized" in str(wrong.value)
        assert listed(bed.service) == []

        image_id = pull(bed.service, name, AuthConfig(username=user, password=password))
        remove(bed.service, image_id)
        assert listed(bed.service) == []

        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        assert pull(bed.service, name, AuthConfig(auth=encoded)) == image_id
        with pytest.raises(InvalidRequest, match=r"auth\.auth"):
            pull(bed.service, name, AuthConfig(auth="%%% not base64"))


def test_global_auth_file_is_used_without_cri_auth(
        tmp_path: Path, criolib_registry_basic: RegistryServer) -> None:
    assert criolib_registry_basic.credentials is not None
    user, password = criolib_registry_basic.credentials
    auth = tmp_path / "global-auth.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    auth.write_text(json.dumps({"auths": {criolib_registry_basic.host: {"auth": token}}}))
    with _bed(tmp_path, criolib_registry_basic, global_auth_file=str(auth)) as bed:
        assert pull(bed.service, f"{bed.host}/testbed/busybox:latest")


def test_auth_config_conversion() -> None:
    assert credentials_from_auth(None, "x") is None
    assert credentials_from_auth(AuthConfig(), "x") is None
    assert credentials_from_auth(AuthConfig(username="u", password="p"), "x") == \
        Credentials(username="u", password="p")
    padded = base64.b64encode(b"u:p:with:colons\x00\x00").decode()
    assert credentials_from_auth(AuthConfig(username="ignored", auth=padded), "x") == \
        Credentials(username="u", password="p:with:colons")
    assert credentials_from_auth(AuthConfig(identity_token="refresh"), "x") == \
        Credentials(identity_token="refresh")
    # registry_token has no counterpart: logged, ignored, anonymous.
    assert credentials_from_auth(AuthConfig(registry_token="bearer"), "x") is None
    with pytest.raises(InvalidRequest, match="user:password"):
        credentials_from_auth(AuthConfig(auth=base64.b64encode(b"nocolon").decode()), "img")


def test_user_and_insecure_helpers() -> None:
    assert user_of({"config": {"User": "1000:100"}})[0] is not None
    assert user_of({"config": {"User": "1000:100"}})[0].value == 1000  # type: ignore[union-attr]
    assert user_of({"config": {"User": "nobody:nogroup"}}) == (None, "nobody")
    assert user_of({"config": {}}) == (None, "")
    assert user_of({}) == (None, "")
    conf = RegistriesConf.from_text(_registries_conf("127.0.0.1:5000"))
    marked = with_insecure(conf, ["127.0.0.1:5000", "other.example:443"])
    mirrored = marked.find_registry(f"{MIRRORED}/busybox")
    assert mirrored is not None and not mirrored.insecure
    assert [m.insecure for m in mirrored.mirrors] == [True]
    assert marked.is_insecure("127.0.0.1:5000/x/y") and marked.is_insecure("other.example:443/z")
    assert not conf.is_insecure("127.0.0.1:5000/x/y")
    assert with_insecure(conf, []) is conf


# -- concurrency ----------------------------------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch, delay: float) -> list[str]:
    calls: list[str] = []
    real: Callable[..., Any] = getattr(images_module, "copy_image")  # noqa: B009 - mypy

    def slow_copy(src: str, dest: str, **kwargs: Any) -> Any:
        calls.append(src)
        time.sleep(delay)  # every other request arrives while this one runs
        return real(src, dest, **kwargs)

    monkeypatch.setattr(images_module, "copy_image", slow_copy)
    return calls


def _in_threads(n: int, work: Callable[[], str]) -> list[str | BaseException]:
    results: list[str | BaseException] = [""] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except BaseException as exc:  # handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_pulls_of_one_image_are_done_once(
        bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch, 0.5)
    name = f"{bed.host}/testbed/multilayer:latest"
    results = _in_threads(4, lambda: pull(bed.service, name))
    assert len(calls) == 1, calls
    assert len(set(results)) == 1 and isinstance(results[0], str) and len(results[0]) == 64

    # A failure reaches every waiter, and is not remembered.
    missing = f"{bed.host}/testbed/multilayer:missing"
    failures = _in_threads(3, lambda: pull(bed.service, missing))
    assert len(calls) == 2
    assert all(isinstance(f, NotFound) and "missing" in str(f) for f in failures), failures
    # Each waiter raises an error object of its own, made from the leader's.
    assert len({id(f) for f in failures}) == 3, failures
    assert sum(isinstance(f, BaseException) and f.__cause__ in failures
               for f in failures) == 2, [(f, getattr(f, "__cause__", None)) for f in failures]
    with pytest.raises(NotFound):
        pull(bed.service, missing)
    assert len(calls) == 3

    # Different references (or credentials) are not merged.
    results = _in_threads(2, lambda: pull(bed.service, name))
    assert len(calls) == 4  # after the first finished: a new pull (already present)
    other = _in_threads(2, lambda: pull(bed.service, "testbed/busybox"))
    assert len(calls) == 5 and isinstance(other[0], str)


# -- removing -------------------------------------------------------------------------------


def test_remove_by_one_tag_removes_every_name_and_is_idempotent(
        bed: Bed, criolib_test_images: TestImages) -> None:
    name = f"{bed.host}/testbed/busybox:latest"
    image_id = pull(bed.service, name)
    other = f"{bed.host}/testbed/busybox:second"
    bed.store.add_names(image_id, [other, "localhost/third:v1"])
    assert sorted(listed(bed.service)[0].repo_tags) == sorted([name, other,
                                                               "localhost/third:v1"])
    remove(bed.service, other)
    for ref in (name, other, "localhost/third:v1", image_id):
        assert status(bed.service, ref).image is None
    assert listed(bed.service) == []
    assert bed.store.layers() == []
    remove(bed.service, other)       # again: success
    remove(bed.service, image_id)    # by id, absent: success
    remove(bed.service, "testbed/never-pulled")

    for form in (image_id[:10], f"{bed.host}/testbed/busybox@"
                 f"{criolib_test_images['busybox'].digest}"):
        assert pull(bed.service, name) == image_id
        remove(bed.service, form)
        assert listed(bed.service) == [], form


def test_remove_an_image_a_container_uses(bed: Bed) -> None:
    image_id = pull(bed.service, f"{bed.host}/testbed/busybox:latest")
    container = bed.store.create_container(image_id, names=["k8s_app_pod_ns_uid_0"])
    with pytest.raises(FailedPrecondition, match="k8s_app_pod_ns_uid_0") as info:
        remove(bed.service, image_id)
    assert info.value.code == "FAILED_PRECONDITION"
    assert container.id[:12] in str(info.value)
    assert status(bed.service, image_id).image is not None
    bed.store.delete_container(container.id)
    remove(bed.service, image_id)
    assert listed(bed.service) == []


# -- filesystem usage -----------------------------------------------------------------------


def test_image_fs_info_after_a_pull(bed: Bed) -> None:
    before = bed.service.image_fs_info(ImageFsInfoRequest())
    pull(bed.service, f"{bed.host}/testbed/multilayer:latest")
    after = bed.service.image_fs_info(ImageFsInfoRequest())
    [usage] = after.image_filesystems
    assert after.container_filesystems == [usage]
    assert usage.fs_id is not None and usage.fs_id.mountpoint == str(bed.store.graphroot)
    assert usage.used_bytes is not None and usage.used_bytes.value > 1_000_000
    assert usage.inodes_used is not None and usage.inodes_used.value > 100
    assert abs(usage.timestamp - time.time_ns()) < 60 * 10**9
    [empty] = before.image_filesystems
    assert empty.used_bytes is not None and empty.used_bytes.value < usage.used_bytes.value
    assert empty.inodes_used is not None
    assert empty.inodes_used.value < usage.inodes_used.value


def test_image_fs_info_is_cached_until_a_pull_or_remove(
        bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[Path] = []
    real = images_module._count_inodes

    def counting(root: Path) -> int:
        walks.append(root)
        return real(root)

    monkeypatch.setattr(images_module, "_count_inodes", counting)
    first = bed.service.image_fs_info(ImageFsInfoRequest())
    again = bed.service.image_fs_info(ImageFsInfoRequest())
    assert len(walks) == 1 and again == first and again is not first
    image_id = pull(bed.service, f"{bed.host}/testbed/busybox:latest")
    pulled = bed.service.image_fs_info(ImageFsInfoRequest())
    assert len(walks) == 2
    assert pulled.image_filesystems[0].inodes_used != first.image_filesystems[0].inodes_used
    remove(bed.service, image_id)
    bed.service.image_fs_info(ImageFsInfoRequest())
    assert len(walks) == 3
    # Past the TTL it measures again.
    monkeypatch.setattr(images_module, "FS_INFO_TTL", 0.0)
    bed.service.image_fs_info(ImageFsInfoRequest())
    assert len(walks) == 4


def test_every_error_is_a_service_error(bed: Bed) -> None:
    for call in (lambda: status(bed.service, "Bad Ref"),
                 lambda: pull(bed.service, f"{bed.host}/testbed/absent:1"),
                 lambda: bed.service.image_config("0" * 64)):
        with pytest.raises(ServiceError):
            call()
