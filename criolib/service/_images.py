"""The CRI ImageService: ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo.

CRI v1 (kubernetes/cri-api ``pkg/apis/runtime/v1/api.proto``, ``service
ImageService``) over criolib.storage and criolib.image, following CRI-O's
``server/image_*.go``:

- an image's id is its config digest's hex; ``repo_tags`` are its tagged names,
  ``repo_digests`` its digested names plus ``repo@<manifest digest>`` for each
  tagged repository; ``size`` is what containers/image's storage source reports
  (uncompressed layers plus manifests and config);
- a reference may be an id, a unique id prefix, ``sha256:<id>``, a name with tag or
  digest, or a short name resolved through registries.conf (aliases, then the
  unqualified-search registries);
- ImageStatus of an absent image answers ``image=None``; RemoveImage of one
  succeeds (the RPC is idempotent) and removes the image with every name it has;
- PullImage copies ``docker://<candidate>`` into ``containers-storage:`` of this
  service's store with criolib.image's ``copy_image``, under policy.json and
  registries.conf (mirrors, insecure registries), with the CRI AuthConfig or the
  global auth file. Pulls of one reference with the same credentials at once are
  done once: the others wait for the first and share its result or its failure
  (a failure is not remembered).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from criolib.image import (
    SYSTEM_POLICY_PATH,
    AmbiguousShortName,
    Credentials,
    ImageError,
    ImageNotFound,
    InvalidImageName,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    NoMatchingPlatform,
    Policy,
    PolicyError,
    Reference,
    RegistriesConf,
    RegistriesConfError,
    SystemContext,
    copy_image,
)
from criolib.service._config import Config
from criolib.service._cri_types import (
    FilesystemIdentifier,
    FilesystemUsage,
    ImageFsInfoRequest,
    ImageFsInfoResponse,
    ImageStatusRequest,
    ImageStatusResponse,
    ListImagesRequest,
    ListImagesResponse,
    PullImageRequest,
    PullImageResponse,
    RemoveImageRequest,
    RemoveImageResponse,
    UInt64Value,
)
from criolib.service._errors import (
    FailedPrecondition,
    Internal,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from criolib.service._images_lookup import (
    candidates,
    credentials_from_auth,
    cri_image,
    id_match,
    is_image_id,
    with_insecure,
)
from criolib.storage import (
    BigDataUnknown,
    ImageInUse,
    ImageUnknown,
    StorageError,
    Store,
    disk_usage,
)
from criolib.storage import Image as StoredImage

__all__ = ["FS_INFO_TTL", "ImageService", "PullFailed"]

log = logging.getLogger("criolib.service")

_NOT_FOUND = (ManifestUnknown, NameUnknown, ImageNotFound, NoMatchingPlatform)

#: Seconds an ImageFsInfo answer is reused (it walks every inode of the store); pulls
#: and removes drop it at once.
FS_INFO_TTL = 10.0


class PullFailed(ServiceError):
    """A pull the registry refused or that failed on the way (auth, policy, network).

    CRI-O answers these with a plain error, which gRPC reports as ``UNKNOWN``; the
    kubelet shows the message (ErrImagePull) whatever the code.
    """

    code = "UNKNOWN"


class _Flight:
    """One pull in progress: the others asking for it wait on ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.image_id: str | None = None
        self.error: BaseException | None = None


class ImageService:
    """The CRI ImageService of one :class:`criolib.storage.Store`.

    ``config`` supplies the ``[crio.image]`` settings (``global_auth_file``,
    ``signature_policy``, ``registries_conf``, ``insecure_registries``); the
    store is the service's, shared with the RuntimeService. Safe to call from
    many threads at once.
    """

    def __init__(self, config: Config, store: Store) -> None:
        self._config = config
        self._store = store
        self._lock = threading.Lock()
        self._pulls: dict[Hashable, _Flight] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._fs_info: tuple[float, ImageFsInfoResponse] | None = None
        self._fs_generation = 0

    def _fs_changed(self) -> None:
        """A pull or a remove changed the store: the next ImageFsInfo measures again."""
        with self._lock:
            self._fs_info = None
            self._fs_generation += 1

    # -- settings ------------------------------------------------------------------

    def registries_conf(self) -> RegistriesConf:
        """registries.conf as the service reads it (its path, or the system's; drop-ins).

        Read on every call so an edit takes effect at the next pull, with
        ``insecure_registries`` applied. A broken file raises :class:`FailedPrecondition`.
        """
        path = self._config.image.registries_conf or None
        try:
            conf = RegistriesConf.load(path)
        except (RegistriesConfError, ImageError, OSError) as exc:
            raise FailedPrecondition(f"registries.conf ({path or 'the system default'}) "
                                     f"cannot be used: {exc}") from exc
        return with_insecure(conf, list(self._config.image.insecure_registries))

    def policy(self) -> Policy:
        """policy.json: ``signature_policy``, else the system's, else accept anything (logged).

        Read on every pull; a missing or broken file that is named raises
        :class:`FailedPrecondition`.
        """
        path = self._config.image.signature_policy
        try:
            if path:
                return Policy.load(path)
            if Path(SYSTEM_POLICY_PATH).exists():
                return Policy.load(SYSTEM_POLICY_PATH)
        except PolicyError as exc:
            raise FailedPrecondition(f"signature policy {path or SYSTEM_POLICY_PATH} cannot "
                                     f"be used: {exc}") from exc
        log.warning("no signature policy (%s does not exist and signature_policy is not set):"
                    " accepting every image", SYSTEM_POLICY_PATH)
        return Policy.insecure_accept_anything()

    # -- lookups -------------------------------------------------------------------

    def _find(self, text: str) -> StoredImage | None:
        """The stored image ``text`` names in any reference form, or ``None``."""
        if not text:
            raise InvalidRequest("no image specified")
        found = id_match(self._store, text)
        if found is not None or is_image_id(text):
            return found
        conf = self.registries_conf() if _maybe_short(text) else None
        for ref in candidates(text, conf):
            try:
                if ref.digest is not None:
                    return self._store.image(f"{ref.name}@{ref.digest}")
                return self._store.image(ref.string())
            except KeyError:
                continue
            except StorageError as exc:
                raise Internal(f"image {text!r}: looking up {ref} in the store failed: "
                               f"{exc}") from exc
        return None

    def resolve_image(self, ref: str) -> StoredImage:
        """The stored image ``ref`` names (id, id prefix, name, digest or short name).

        :class:`NotFound` when there is none; :class:`InvalidRequest` for text that
        is no reference.
        """
        image = self._find(ref)
        if image is None:
            raise NotFound(f"image {ref!r} not found in the store at {self._store.graphroot}")
        return image

    def image_config(self, image_id: str) -> dict[str, Any]:
        """The image's OCI config (the JSON stored as its ``config`` big data); a copy."""
        return copy.deepcopy(self._config_of(image_id))

    def _config_of(self, image_id: str) -> dict[str, Any]:
        with self._lock:
            cached = self._configs.get(image_id)
        if cached is not None:
            return cached
        try:
            raw = self._store.big_data(image_id, "config")
        except ImageUnknown as exc:
            raise NotFound(f"image {image_id!r} not found: {exc}") from exc
        except BigDataUnknown as exc:
            raise Internal(f"image {image_id}: the store holds no config for it: {exc}") from exc
        except StorageError as exc:
            raise Internal(f"image {image_id}: reading its config failed: {exc}") from exc
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise Internal(f"image {image_id}: its stored config is not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise Internal(f"image {image_id}: its stored config is not a JSON object")
        with self._lock:
            # The id is the config's digest: what is cached never goes stale.
            self._configs[image_id] = config
        return config

    def _manifest_of(self, image: StoredImage) -> bytes | None:
        try:
            return self._store.big_data(image.id, "manifest")
        except StorageError:
            return None

    def _describe(self, image: StoredImage) -> Any:
        return cri_image(self._store, image, self._config_of(image.id),
                         self._manifest_of(image))

    # -- RPCs ----------------------------------------------------------------------

    def list_images(self, request: ListImagesRequest) -> ListImagesResponse:
        """ListImages: every image, or the one ``filter.image.image`` names (any form)."""
        wanted = (request.filter.image.image
                  if request.filter is not None and request.filter.image is not None else "")
        if wanted:
            image = self._find(wanted)
            images = [image] if image is not None else []
        else:
            try:
                images = self._store.images()
            except StorageError as exc:
                raise Internal(f"listing the images of {self._store.graphroot}: {exc}") from exc
        described = []
        for image in images:
            try:
                described.append(self._describe(image))
            except NotFound:
                continue  # removed while we listed
        return ListImagesResponse(images=described)

    def image_status(self, request: ImageStatusRequest) -> ImageStatusResponse:
        """ImageStatus: the image, or ``image=None`` when absent (not an error).

        ``verbose`` adds ``info["info"]``: ``{"labels": ..., "imageSpec": <config>}``
        as CRI-O's ``createImageInfo`` writes it.
        """
        text = request.image.image if request.image is not None else ""
        image = self._find(text)
        if image is None:
            log.info("image %s not found", text)
            return ImageStatusResponse(image=None)
        try:
            described = self._describe(image)
        except NotFound:
            return ImageStatusResponse(image=None)
        info: dict[str, str] = {}
        if request.verbose:
            config = self._config_of(image.id)
            inner = config.get("config")
            labels = inner.get("Labels") if isinstance(inner, dict) else None
            doc: dict[str, Any] = {}
            if labels:
                doc["labels"] = labels
            doc["imageSpec"] = config
            info["info"] = json.dumps(doc)
        return ImageStatusResponse(image=described, info=info)

    def remove_image(self, request: RemoveImageRequest) -> RemoveImageResponse:
        """RemoveImage: the image and all its names; absent is success (idempotent).

        An image a container uses raises :class:`FailedPrecondition` naming them.
        """
        text = request.image.image if request.image is not None else ""
        image = self._find(text)
        if image is None:
            log.info("image %s is not in the store: nothing to remove", text)
            return RemoveImageResponse()
        try:
            removed = self._store.delete_image(image.id)
        except ImageUnknown:
            return RemoveImageResponse()  # another request removed it first
        except ImageInUse as exc:
            users = ", ".join(self._container_label(c) for c in exc.containers)
            raise FailedPrecondition(f"image {text!r} ({image.id[:12]}) is in use by "
                                     f"container(s) {users}") from exc
        except StorageError as exc:
            raise Internal(f"removing image {text!r} ({image.id[:12]}): {exc}") from exc
        with self._lock:
            self._configs.pop(image.id, None)
        self._fs_changed()
        log.info("removed image %s (%s) and %d layer(s)", image.id[:12],
                 ", ".join(image.names) or "no names", len(removed))
        return RemoveImageResponse()

    def _container_label(self, container_id: str) -> str:
        try:
            names = self._store.container(container_id).names
        except StorageError:
            names = ()
        return f"{container_id[:12]} ({names[0]})" if names else container_id[:12]

    def image_fs_info(self, request: ImageFsInfoRequest) -> ImageFsInfoResponse:
        """ImageFsInfo: bytes and inodes the store uses, for images and containers alike.

        Bytes from :func:`criolib.storage.disk_usage` (each layer once, containers'
        layers included); inodes counted under the graph root on its own filesystem
        (mounted container roots are not walked). The filesystem is named by the
        graph root; CRI-O reports its one store for both lists too. An answer is reused
        for :data:`FS_INFO_TTL` seconds unless a pull or a remove came in between.
        """
        del request
        with self._lock:
            cached, generation = self._fs_info, self._fs_generation
        if cached is not None and time.monotonic() - cached[0] < FS_INFO_TTL:
            return copy.deepcopy(cached[1])
        measured_at = time.monotonic()
        try:
            used = disk_usage(self._store).total
        except StorageError as exc:
            raise Internal(f"measuring the store at {self._store.graphroot}: {exc}") from exc
        usage = FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=FilesystemIdentifier(mountpoint=str(self._store.graphroot)),
            used_bytes=UInt64Value(value=used),
            inodes_used=UInt64Value(value=_count_inodes(Path(self._store.graphroot))))
        response = ImageFsInfoResponse(image_filesystems=[usage],
                                       container_filesystems=[usage])
        with self._lock:
            if self._fs_generation == generation:
                self._fs_info = (measured_at, copy.deepcopy(response))
        return response

    # -- pulling -------------------------------------------------------------------

    def pull_image(self, request: PullImageRequest) -> PullImageResponse:
        """PullImage: into the store; ``image_ref`` is the image id.

        See the module docstring. An unparsable reference raises
        :class:`InvalidRequest`; an image no registry has, :class:`NotFound`;
        anything else the registries or the policy refuse, :class:`PullFailed`
        with their words; every message names the reference.
        """
        text = request.image.image if request.image is not None else ""
        if not text:
            raise InvalidRequest("PullImage: no image specified")
        creds = credentials_from_auth(request.auth, text)
        if request.sandbox_config is not None and request.sandbox_config.metadata is not None:
            meta = request.sandbox_config.metadata
            log.info("pulling %s for pod %s/%s", text, meta.namespace, meta.name)
        conf = self.registries_conf()
        refs = candidates(text, conf, strict=True)
        key = (tuple(r.string() for r in refs), _creds_key(creds))
        with self._lock:
            flight = self._pulls.get(key)
            leader = flight is None
            if flight is None:
                flight = self._pulls[key] = _Flight()
        if not leader:
            log.info("pull of %s already in progress: waiting for it", text)
            flight.done.wait()
            if flight.error is not None:
                raise _again(text, flight.error) from flight.error
            assert flight.image_id is not None
            return PullImageResponse(image_ref=flight.image_id)
        try:
            flight.image_id = self._pull(text, refs, conf, creds)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._pulls[key]
            flight.done.set()
            self._fs_changed()
        return PullImageResponse(image_ref=flight.image_id)

    def _pull(self, text: str, refs: list[Reference], conf: RegistriesConf,
              creds: Credentials | None) -> str:
        policy = self.policy()
        auth_file = self._config.image.global_auth_file
        ctx = SystemContext(registries_conf=conf, credentials=creds, store=self._store,
                            auth_file=Path(auth_file) if auth_file else None)
        failures: list[tuple[Reference, ImageError]] = []
        for ref in refs:
            name = ref.string()
            started = time.monotonic()
            try:
                result = copy_image(f"docker://{name}", f"containers-storage:{name}",
                                    policy=policy, ctx=ctx)
            except ImageError as exc:
                log.info("pulling %s as %s failed: %s", text, name, exc)
                failures.append((ref, exc))
                continue
            except StorageError as exc:
                raise Internal(f"pulling {text!r} ({name}) into the store at "
                               f"{self._store.graphroot}: {exc}") from exc
            image_id = self._pulled_id(text, ref, result.config_digest)
            log.info("pulled %s as %s: image %s, %d layer(s) copied, %d present, %.2f s",
                     text, name, image_id[:12], result.layers_copied, result.layers_skipped,
                     time.monotonic() - started)
            return image_id
        raise _pull_error(text, failures)

    def _pulled_id(self, text: str, ref: Reference, config_digest: str | None) -> str:
        name = ref.string()
        try:
            if config_digest:
                image_id = config_digest.partition(":")[2]
            else:
                image_id = self._store.image(name if ref.digest is None
                                             else f"{ref.name}@{ref.digest}").id
            if ref.digest is not None and ref.tag is None:
                # containers/image names a digest pull repo@digest; criolib.image's
                # storage destination names only tags, so the name is added here.
                self._store.add_names(image_id, [name])
        except StorageError as exc:
            raise Internal(f"pulling {text!r} ({name}): the image is not in the store "
                           f"afterwards: {exc}") from exc
        return image_id


def _maybe_short(text: str) -> bool:
    """Whether ``text`` could be a short name (no registry host before the first ``/``)."""
    first, slash, _ = text.partition("/")
    return not slash or not (any(c in first for c in ".:") or first == "localhost")


def _creds_key(creds: Credentials | None) -> Hashable:
    if creds is None:
        return None
    return (creds.username, creds.password, creds.identity_token)


def _pull_error(text: str, failures: list[tuple[Reference, ImageError]]) -> ServiceError:
    """The error for a pull every candidate failed: NotFound only if all said not found."""
    if not failures:
        return NotFound(f"image {text!r}: no registry to pull it from")
    if len(failures) == 1:
        ref, exc = failures[0]
        # criolib.image's errors name what they tried; say it once more only if it differs.
        tried = str(exc) if ref.string() in str(exc) else f"{ref}: {exc}"
    else:
        tried = "; ".join(f"{ref}: {exc}" for ref, exc in failures)
    bad = [exc for _, exc in failures if isinstance(exc, InvalidReference | InvalidImageName
                                                    | AmbiguousShortName)]
    if bad:
        return InvalidRequest(f"pulling image {text!r}: {tried}")
    if all(isinstance(exc, _NOT_FOUND) for _, exc in failures):
        return NotFound(f"pulling image {text!r}: not found: {tried}")
    return PullFailed(f"pulling image {text!r}: {tried}")


def _again(text: str, exc: BaseException) -> BaseException:
    """For a waiter of a pull that failed: a new error of the same class (each thread
    raises its own object, so tracebacks and causes are not shared), from ``exc``."""
    if isinstance(exc, Exception):
        try:
            again = type(exc)(str(exc))
        except Exception:  # a class whose constructor wants more than a message
            again = None
        if isinstance(again, ServiceError):
            return again
    return Internal(f"PullImage {text!r}: the pull this request waited for failed: "
                    f"{type(exc).__name__}: {exc}")


def _count_inodes(root: Path) -> int:
    """Inodes under ``root`` on its own filesystem (each hard-linked inode once)."""
    try:
        dev = os.lstat(root).st_dev
    except OSError:
        return 0
    seen: set[int] = set()
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue  # a mount (a container's root) or another filesystem
                seen.add(st.st_ino)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return len(seen) + 1
