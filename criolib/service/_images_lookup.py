"""Finding a stored image by any reference form, and describing it as a CRI ``Image``.

CRI-O ``server/image_status.go`` (``storageImageStatus``: an id or id prefix first,
then every candidate a possibly short name stands for) and ``internal/storage``
(``ImageResult``: tags, repo digests, size, user). The ImageService in
:mod:`criolib.service._images` puts these together.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from criolib.image import (
    Credentials,
    InvalidReference,
    Reference,
    RegistriesConf,
    Registry,
    ShortNameError,
    is_short_name,
    parse_normalized,
    parse_reference,
    resolve_short_name,
)
from criolib.service._cri_types import AuthConfig, Image, ImageSpec, Int64Value
from criolib.service._errors import InvalidRequest
from criolib.storage import AmbiguousID, StorageError, Store
from criolib.storage import Image as StoredImage

__all__ = [
    "annotations_of",
    "candidates",
    "credentials_from_auth",
    "cri_image",
    "id_match",
    "image_size",
    "is_image_id",
    "split_names",
    "user_of",
    "with_insecure",
]

log = logging.getLogger("criolib.service")

_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")
_SHA256 = re.compile(r"(sha256:)?[0-9a-f]{64}")


def is_image_id(text: str) -> bool:
    """Whether ``text`` can only be an image id or digest (64 hex, ``sha256:`` or not)."""
    return _SHA256.fullmatch(text) is not None


def id_match(store: Store, text: str) -> StoredImage | None:
    """The image ``text`` names as an id, unique id prefix or ``sha256:<id>``, else ``None``.

    CRI-O's ``HeuristicallyTryResolvingStringAsIDPrefix``: only lowercase hex (a
    short name such as ``cafe`` is tried as a prefix first, as CRI-O does), and
    only when the image found really has an id starting with it. A prefix several
    images share raises :class:`InvalidRequest` naming them.
    """
    if text.startswith("sha256:") and is_image_id(text):
        try:
            image = store.image(text)  # an image id, or a manifest digest
        except KeyError:
            return None
        return image
    if not _HEX_PREFIX.fullmatch(text):
        return None
    try:
        image = store.image(text)
    except AmbiguousID as exc:
        raise InvalidRequest(f"image {text!r}: the id prefix matches several images: "
                             f"{exc}") from exc
    except KeyError:
        return None
    return image if image.id.startswith(text) else None


def _parse(text: str) -> Reference:
    try:
        ref = parse_normalized(text)
    except InvalidReference as exc:
        raise InvalidRequest(f"image {text!r} is not a valid image reference: {exc}") from exc
    if ref.digest is not None and ref.tag is not None:
        # containers/image (and CRI-O) drop the tag of name:tag@digest: the digest wins.
        ref = attrs.evolve(ref, tag=None)
    return ref.with_default_tag()


def candidates(text: str, conf: RegistriesConf | None, *,
               strict: bool = False) -> list[Reference]:
    """The fully qualified references ``text`` may stand for, in order.

    A fully qualified name is itself (``:latest`` added; a tag beside a digest
    dropped). A short name goes through registries.conf (``conf``): its alias, else
    each unqualified-search registry, in ``disabled`` short-name mode as CRI-O
    resolves them (no terminal to ask, every candidate tried). For a lookup in the
    store the Docker spelling (``docker.io/library/...``) comes last; with
    ``strict`` (a pull) a short name that resolves to nothing raises
    :class:`InvalidRequest` instead. Text that is no reference raises
    :class:`InvalidRequest`, and so does an id (64 hex), which names no repository.
    """
    if is_image_id(text):
        raise InvalidRequest(f"image {text!r} is an image id or digest, not a name that can "
                             "be pulled or resolved through registries")
    try:
        parse_reference(text)
        short = is_short_name(text)
    except InvalidReference as exc:
        raise InvalidRequest(f"image {text!r} is not a valid image reference: {exc}") from exc
    if not short:
        return [_parse(text)]
    found: list[Reference] = []
    if conf is not None:
        try:
            resolution = resolve_short_name(text, conf, mode="disabled")
        except ShortNameError as exc:
            if strict:
                raise InvalidRequest(f"image {text!r}: {exc}") from exc
            log.debug("short name %s: %s", text, exc)
        except InvalidReference as exc:
            raise InvalidRequest(f"image {text!r} is not a valid image reference: "
                                 f"{exc}") from exc
        else:
            if resolution.description:
                log.info("%s", resolution.description)
            for ref in resolution.candidates:
                tagless = ref.digest is not None and ref.tag is not None
                found.append(attrs.evolve(ref, tag=None) if tagless else ref)
    if not strict:
        docker = _parse(text)
        if docker not in found:
            found.append(docker)
    return found


def with_insecure(conf: RegistriesConf, hosts: Sequence[str]) -> RegistriesConf:
    """``conf`` with the registries (and mirrors) on ``hosts`` marked ``insecure``.

    crio.conf's ``insecure_registries``: plain HTTP or unverified TLS to those
    hosts, whether they are a primary location or a mirror. A host no
    ``[[registry]]`` names gets an entry of its own.
    """
    wanted = {h.strip().rstrip("/") for h in hosts if h.strip()}
    if not wanted:
        return conf

    def hit(location: str) -> bool:
        return location.split("/", 1)[0] in wanted or location in wanted

    registries: list[Registry] = []
    for reg in conf.registries:
        mirrors = tuple(attrs.evolve(m, insecure=True) if hit(m.location) else m
                        for m in reg.mirrors)
        insecure = reg.insecure or hit(reg.location or reg.prefix)
        registries.append(attrs.evolve(reg, insecure=insecure, mirrors=mirrors))
    prefixes = {reg.prefix for reg in registries}
    for host in sorted(wanted - prefixes):
        registries.append(Registry(prefix=host, location=host, insecure=True,
                                   origin="crio.image.insecure_registries"))
    return attrs.evolve(conf, registries=tuple(sorted(registries, key=lambda r: r.prefix)))


def credentials_from_auth(auth: AuthConfig | None, image: str) -> Credentials | None:
    """The CRI ``AuthConfig`` as criolib.image credentials (``None``: use the auth file).

    CRI-O's ``PullImage``: ``auth`` (base64 ``user:password``, docker's encoding)
    wins over ``username``/``password``; ``identity_token`` is an OAuth2 refresh
    token. ``registry_token`` (a bearer token for the registry itself) has no
    counterpart in criolib.image: it is logged and ignored, as CRI-O ignores it.
    ``server_address`` is not checked (CRI-O does not either).
    """
    if auth is None:
        return None
    username, password = auth.username, auth.password
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"pulling {image}: auth.auth is not base64 of "
                                 f"\"user:password\": {exc}") from exc
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise InvalidRequest(f"pulling {image}: auth.auth decodes to no "
                                 "\"user:password\" pair")
        username, password = user, secret.strip("\x00")
    if auth.registry_token:
        log.warning("pulling %s: the CRI AuthConfig's registry_token is not supported "
                    "(criolib.image takes user/password or an identity token); ignored", image)
    if not (username or password or auth.identity_token):
        return None
    return Credentials(username=username, password=password,
                       identity_token=auth.identity_token, source="the CRI AuthConfig")


def split_names(image: StoredImage) -> tuple[list[str], list[str]]:
    """``(repo_tags, repo_digests)`` of a stored image (CRI-O ``sortNamesByType``).

    Names with ``@`` are digests already; every tagged name's repository also gets
    ``repo@<manifest digest>`` (``makeRepoDigests``).
    """
    tags = [n for n in image.names if "@" not in n]
    digests = [n for n in image.names if "@" in n]
    digest = image.digest or (image.digests[0] if image.digests else None)
    if digest:
        for tag in tags:
            try:
                repo = parse_reference(tag).name
            except InvalidReference:
                continue
            named = f"{repo}@{digest}"
            if named not in digests:
                digests.append(named)
    return tags, digests


def image_size(store: Store, image: StoredImage) -> int:
    """Bytes of the image as containers/image's storage source sizes it (``getSize``).

    The uncompressed size of every layer plus the big data (manifests, config):
    what CRI-O reports as ``Image.size``.
    """
    try:
        layers = store.image_layers(image.id)
    except StorageError as exc:
        log.info("image %s: cannot read its layers for its size: %s", image.id[:12], exc)
        layers = []
    return (sum(layer.uncompressed_size or 0 for layer in layers)
            + sum(image.big_data_sizes.values()))


def user_of(config: Mapping[str, Any]) -> tuple[Int64Value | None, str]:
    """``(uid, username)`` from the config's ``User`` (CRI-O ``getUserFromImage``)."""
    inner = config.get("config")
    user = inner.get("User") if isinstance(inner, Mapping) else None
    if not isinstance(user, str) or not user:
        return None, ""
    user = user.split(":", 1)[0]
    try:
        return Int64Value(value=int(user, 10)), ""
    except ValueError:
        return None, user


def annotations_of(manifest: bytes | None) -> dict[str, str]:
    """The manifest's annotations (what CRI-O puts in ``Image.spec.annotations``)."""
    if not manifest:
        return {}
    try:
        doc = json.loads(manifest)
    except ValueError:
        return {}
    found = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items()}


def cri_image(store: Store, image: StoredImage, config: Mapping[str, Any],
              manifest: bytes | None) -> Image:
    """The CRI ``Image`` of a stored image (CRI-O ``ConvertImage`` / ``ImageStatus``)."""
    tags, digests = split_names(image)
    uid, username = user_of(config)
    return Image(id=image.id, repo_tags=tags, repo_digests=digests,
                 size=image_size(store, image), uid=uid, username=username,
                 spec=ImageSpec(annotations=annotations_of(manifest)), pinned=False)
