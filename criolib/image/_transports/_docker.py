"""The ``docker://`` transport: images in a registry (containers/image ``docker/``).

``docker://host[:port]/repo[:tag][@digest]``; a name without a registry
(``docker://busybox``) is a *short name*, resolved when the image is opened by
:func:`~criolib.image.resolve_short_name` (aliases, then each
unqualified-search registry in turn, as podman does). Reading goes through
registries.conf (``docker_image_src.go`` ``newImageSource``): each pull source
(the mirrors in order, then the primary location) is tried until one serves the
manifest, and the blobs then come from that same endpoint. Credentials are the
context's when given, else auth.json's for the endpoint's repository; a registry
is spoken to over plain HTTP / without TLS verification when the context says
``insecure`` or registries.conf marks it so.

Writing pushes to the reference as given (``docker_image_dest.go``): blobs
first, then instance manifests by digest, and the tagged manifest last, in
:meth:`DockerImageDestination.commit`, so nothing is visible under the tag
before every blob is there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, NoReturn

import attrs

from criolib.image._credentials import Credentials, get_credentials
from criolib.image._errors import (
    BlockedRegistry,
    ImageError,
    InvalidImageName,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    manifest_digest,
)
from criolib.image._reference import Reference, is_short_name, parse_normalized
from criolib.image._registries_conf import RegistriesConf
from criolib.image._registry import RegistryClient
from criolib.image._shortnames import resolve_short_name
from criolib.image._transports import register_transport
from criolib.image._transports._base import SystemContext

__all__ = [
    "DOCKER_TRANSPORT",
    "DockerImageDestination",
    "DockerImageSource",
    "DockerReference",
    "DockerTransport",
    "registry_client",
]

log = logging.getLogger("criolib.image")


@attrs.frozen
class DockerTransport:
    """``docker:`` (containers/image ``docker.Transport``)."""

    name: str = "docker"

    def parse(self, reference: str) -> DockerReference:
        """Parse ``//name``, the part after ``docker:``."""
        return DockerReference.parse(reference)


DOCKER_TRANSPORT = DockerTransport()


@attrs.frozen
class DockerReference:
    """An image in a registry: the normalised reference, and whether it was a short name.

    ``ref`` is fully qualified with a tag (``:latest`` when neither tag nor digest
    was given); ``short_name`` holds the text as given when it named no registry.
    """

    ref: Reference
    short_name: str | None = None

    @property
    def transport(self) -> DockerTransport:
        return DOCKER_TRANSPORT

    @classmethod
    def parse(cls, text: str) -> DockerReference:
        """``//host/repo:tag`` → a reference; :class:`InvalidImageName` if malformed."""
        if not text.startswith("//"):
            raise InvalidImageName(f"docker:{text}: a docker reference starts with "
                                   "'docker://'")
        name = text[2:]
        try:
            ref = parse_normalized(name).with_default_tag()
        except InvalidReference as exc:
            raise InvalidImageName(f"docker:{text}: {exc}") from exc
        return cls(ref, name if is_short_name(name) else None)

    @classmethod
    def from_reference(cls, ref: Reference | str) -> DockerReference:
        """The image ``ref`` (text or :class:`Reference`) names, in the docker transport."""
        return cls.parse(f"//{ref}")

    def string_within_transport(self) -> str:
        return f"//{self.short_name or self.ref}"

    def __str__(self) -> str:
        return f"docker:{self.string_within_transport()}"

    def policy_scope(self) -> str:
        """The normalised reference (``PolicyConfigurationIdentity``), short names as docker.io.

        For a short name this is only a placeholder: ``copy_image`` checks the policy
        against each candidate the name resolves to (see :class:`DockerImageSource`).
        """
        return str(self.ref)

    def new_source(self, ctx: SystemContext, *,
                   check_candidate: CandidateCheck | None = None) -> DockerImageSource:
        return DockerImageSource(self, ctx, check_candidate=check_candidate)

    def new_destination(self, ctx: SystemContext) -> DockerImageDestination:
        if self.short_name is not None:
            raise InvalidImageName(f"{self}: pushing needs a fully qualified name "
                                   f"(such as {self.ref})")
        return DockerImageDestination(self, ctx)


def _conf(ctx: SystemContext) -> RegistriesConf:
    return ctx.registries_conf if ctx.registries_conf is not None else RegistriesConf.load()


def registry_client(ref: Reference, ctx: SystemContext, *, insecure: bool = False,
                    conf: RegistriesConf | None = None) -> RegistryClient:
    """A client for ``ref``'s registry with the context's (or auth.json's) credentials."""
    creds: Credentials | None = ctx.credentials
    if creds is None:
        helpers = conf.credential_helpers if conf is not None else None
        creds = get_credentials(ref.name_only(), auth_file=ctx.auth_file,
                                credential_helpers=helpers)
    return RegistryClient(ref.domain, insecure=insecure or ctx.insecure, credentials=creds,
                          timeout=ctx.timeout, retries=ctx.retries)


def _tag_or_digest(ref: Reference) -> str:
    return ref.digest or ref.tag or "latest"


#: Called with each candidate a short name resolves to before it is tried; raises to skip it.
CandidateCheck = Callable[[Reference], None]


class DockerImageSource:
    """Reads an image from the first pull source that has it (see the module docstring).

    ``check_candidate`` (``copy_image`` passes the policy) is called with each
    candidate name before any endpoint of it is contacted; an :class:`ImageError`
    from it (such as :class:`~criolib.image.PolicyDenied`) skips the candidate,
    like podman's libimage checks the policy per resolved short name.
    """

    def __init__(self, ref: DockerReference, ctx: SystemContext, *,
                 check_candidate: CandidateCheck | None = None) -> None:
        self.reference = str(ref)
        self._ref = ref
        self._ctx = ctx
        self._check = check_candidate
        self._lock = threading.Lock()
        self._client: RegistryClient | None = None
        self._pulled: Reference | None = None
        self._first: tuple[bytes, str] | None = None

    @property
    def pulled_reference(self) -> Reference | None:
        """The reference the manifest came from (after mirrors and short names)."""
        return self._pulled

    def _candidates(self, conf: RegistriesConf) -> list[Reference]:
        if self._ref.short_name is None:
            return [self._ref.ref]
        resolution = resolve_short_name(self._ref.short_name, conf)
        if resolution.description:
            log.info("%s", resolution.description)
        return list(resolution.candidates)

    def _open(self) -> tuple[RegistryClient, Reference]:
        """Find the endpoint that serves the manifest (mirrors first); keep its answer."""
        if self._client is not None and self._pulled is not None:
            return self._client, self._pulled
        conf = _conf(self._ctx)
        errors: list[tuple[str, Exception]] = []
        for candidate in self._candidates(conf):
            try:
                if self._check is not None:
                    self._check(candidate)
                # A blocked search registry is one failed candidate, not the end
                # (podman tries the next one); a fully qualified name has just one.
                sources = conf.pull_sources(candidate)
            except (BlockedRegistry, ImageError) as exc:
                log.info("%s: skipping %s: %s", self.reference, candidate, exc)
                errors.append((str(candidate), exc))
                continue
            for source in sources:
                where = source.reference_rewritten
                client = registry_client(where, self._ctx, insecure=source.insecure, conf=conf)
                try:
                    raw = client.get_manifest(where.path, _tag_or_digest(where))
                except (RegistryError, ImageError) as exc:
                    client.close()
                    log.info("%s: %s %s failed: %s", self.reference,
                             "mirror" if source.is_mirror else "registry", where, exc)
                    errors.append((str(where), exc))
                    continue
                log.debug("%s: pulling from %s", self.reference, where)
                self._client, self._pulled = client, where
                self._first = (raw.data, raw.media_type)
                return client, where
        _raise_pull_errors(self.reference, errors)

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        """The manifest (or index) by tag or digest; ``instance`` by its digest."""
        with self._lock:
            client, where = self._open()
            if instance is None:
                assert self._first is not None
                return self._first
        raw = client.get_manifest(where.path, instance)
        return raw.data, raw.media_type

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        """The blob from the endpoint that served the manifest (verified as it is read)."""
        with self._lock:
            client, where = self._open()
        stream: BinaryIO = client.get_blob(where.path, digest, size)
        return stream

    def has_blob_cheaply(self, digest: str) -> bool:
        return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"DockerImageSource({self.reference!r})"


def _raise_pull_errors(reference: str, errors: list[tuple[str, Exception]]) -> NoReturn:
    """Raise the most telling failure of every endpoint tried."""
    if not errors:
        raise ImageError(f"{reference}: no registry to pull from")
    if len(errors) == 1:
        raise errors[0][1]
    # Prefer an answer about the image itself (unknown manifest) over a mirror outage;
    # the message lists every attempt, like containers/image does.
    summary = "; ".join(f"{where}: {exc}" for where, exc in errors)
    for _, exc in reversed(errors):
        if isinstance(exc, ManifestUnknown | NameUnknown):
            log.info("%s: every source failed: %s", reference, summary)
            raise exc
    raise errors[-1][1] from ImageError(f"{reference}: every source failed: {summary}")


class DockerImageDestination:
    """Pushes an image to a registry (see the module docstring)."""

    supported_manifest_types: tuple[str, ...] = (
        MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST)

    def __init__(self, ref: DockerReference, ctx: SystemContext) -> None:
        self.reference = str(ref)
        self._ref = ref.ref
        conf = _conf(ctx)
        conf.check_not_blocked(self._ref)
        self._client = registry_client(self._ref, ctx, insecure=conf.is_insecure(self._ref),
                                       conf=conf)
        self._repo = self._ref.path
        self._top: tuple[bytes, str] | None = None

    def has_blob(self, digest: str, size: int = -1) -> bool:
        return self._client.blob_exists(self._repo, digest)

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        self._client.put_blob(self._repo, stream, digest, size)

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        self.put_blob(stream, str(descriptor["digest"]), int(descriptor.get("size", -1)),
                      str(descriptor.get("mediaType", "")))

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None
                     ) -> None:
        """Push an instance by digest now; keep the image's own manifest for :meth:`commit`."""
        if instance is not None:
            self._client.put_manifest(self._repo, instance, manifest, media_type)
        else:
            self._top = (manifest, media_type)

    def commit(self) -> None:
        """Push the manifest under the tag (or its digest): the image appears now."""
        if self._top is None:
            raise ImageError(f"{self.reference}: commit without a manifest")
        manifest, media_type = self._top
        digest = manifest_digest(manifest)
        if self._ref.digest is not None and self._ref.digest != digest:
            raise ImageError(f"{self.reference}: the manifest to push has digest {digest}, "
                             f"not the {self._ref.digest} the reference names (copy with a "
                             "tag, or keep the digests)")
        self._client.put_manifest(self._repo, self._ref.tag or digest, manifest, media_type)
        if self._ref.tag is not None and self._ref.digest is not None:
            self._client.put_manifest(self._repo, digest, manifest, media_type)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"DockerImageDestination({self.reference!r})"


register_transport(DOCKER_TRANSPORT)
