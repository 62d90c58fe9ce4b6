"""``criolib image``: copy, inspect, pull and push images (like skopeo and podman).

``copy SRC DEST`` and ``inspect REF`` take ``transport:name`` references as
skopeo does; ``pull``, ``push``, ``rm`` and ``ls`` work on a
``containers-storage`` store as podman does (``--root``/``--runroot``/
``--storage-driver``, else storage.conf); ``tags``, ``login`` and ``logout``
talk to registries. Only criolib.image's and criolib.storage's public API is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from criolib.cli import _image_local
from criolib.cli._image_common import (
    add_common,
    add_platform,
    add_storage,
    add_tls,
    context,
    open_store,
    policy_of,
)
from criolib.cli._image_progress import ProgressPrinter, human_size
from criolib.image import (
    CopyResult,
    DockerManifestList,
    DockerReference,
    ImageReference,
    ImageSource,
    ManifestUnknown,
    NameUnknown,
    OCIIndex,
    RegistryUnavailable,
    StorageReference,
    StoreSpec,
    SystemContext,
    choose_instance,
    copy_image,
    manifest_digest,
    parse_image_name,
    parse_manifest,
    registry_client,
    resolve_short_name,
    transport_names,
)
from criolib.image import ImageError as _ImageError
from criolib.storage import Store

HELP = "copy, inspect, pull and push images (like skopeo and podman)"

_Handler = Callable[[argparse.Namespace], int]


def register(parser: argparse.ArgumentParser) -> _Handler:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = sub.add_parser("copy", help="copy an image between transports (skopeo copy)")
    p.add_argument("src", metavar="SRC", help="transport:name, e.g. docker://quay.io/x:1")
    p.add_argument("dest", metavar="DEST", help="transport:name, e.g. oci:/srv/layout:x")
    add_common(p)
    add_storage(p)
    add_platform(p)
    add_tls(p, "src-", "dest-")
    p.add_argument("--all", "-a", action="store_true", help="copy every instance of an index")
    p.add_argument("--preserve-digests", action="store_true",
                   help="fail rather than convert a manifest (digests stay as they are)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(verb_handler=_copy)

    p = sub.add_parser("inspect", help="show an image's manifest, config and tags "
                       "(skopeo inspect)")
    p.add_argument("ref", metavar="REF", help="transport:name")
    p.add_argument("--raw", action="store_true", help="print the manifest as stored")
    p.add_argument("--config", action="store_true", help="print the image config")
    add_common(p)
    add_storage(p)
    add_platform(p)
    add_tls(p)
    p.set_defaults(verb_handler=_inspect)

    p = sub.add_parser("pull", help="pull an image into containers-storage (podman pull)")
    p.add_argument("ref", metavar="REF", help="docker reference (short names resolved) or "
                   "transport:name")
    p.add_argument("--name", help="name for an image from a transport other than docker")
    add_common(p)
    add_storage(p)
    add_platform(p)
    add_tls(p)
    p.add_argument("--quiet", "-q", action="store_true", help="print only the image id")
    p.set_defaults(verb_handler=_pull)

    p = sub.add_parser("push", help="push an image from containers-storage (podman push)")
    p.add_argument("src", metavar="IMAGE", help="name or id in the store")
    p.add_argument("dest", metavar="DEST", nargs="?",
                   help="docker reference or transport:name (default: the image's name)")
    add_common(p)
    add_storage(p)
    add_tls(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(verb_handler=_push)

    _image_local.register(sub)
    return _run


def _run(args: argparse.Namespace) -> int:
    handler: _Handler = args.verb_handler
    return handler(args)


def _needs_store(*refs: ImageReference) -> bool:
    return any(isinstance(r, StorageReference) and r.spec.empty for r in refs)


def _progress(args: argparse.Namespace) -> ProgressPrinter | None:
    return None if args.quiet else ProgressPrinter()


def _summary(result: CopyResult) -> str:
    return (f"Writing manifest to image destination: {result.manifest_digest} "
            f"({result.layers_copied} layers copied, {result.layers_skipped} skipped, "
            f"{human_size(result.bytes_copied)})")


def _copy(args: argparse.Namespace) -> int:
    src, dest = parse_image_name(args.src), parse_image_name(args.dest)
    policy = policy_of(args)
    with _maybe_store(args, _needs_store(src, dest)) as store:
        progress = _progress(args)
        result = copy_image(
            src, dest, policy=policy,
            src_ctx=context(args, creds=args.src_creds, tls_verify=args.src_tls_verify,
                            store=store),
            dest_ctx=context(args, creds=args.dest_creds, tls_verify=args.dest_tls_verify,
                             store=store),
            all_platforms=args.all, preserve_digests=args.preserve_digests,
            progress=progress)
        if progress is not None:
            progress.finish(_summary(result))
    return 0


@contextlib.contextmanager
def _maybe_store(args: argparse.Namespace, needed: bool) -> Iterator[Store | None]:
    """The store of the storage options when ``needed``, else ``None``."""
    if not needed:
        yield None
        return
    with open_store(args) as store:
        yield store


# -- inspect ------------------------------------------------------------------------


def _inspect(args: argparse.Namespace) -> int:
    ref = parse_image_name(args.ref)
    with _maybe_store(args, _needs_store(ref)) as store:
        ctx = context(args, creds=args.creds, tls_verify=args.tls_verify, store=store)
        source = ref.new_source(ctx)
        try:
            raw, media_type = source.get_manifest()
            if args.raw and not args.config:
                sys.stdout.buffer.write(raw)
                sys.stdout.flush()
                return 0
            top_digest = manifest_digest(raw)
            manifest, config = _image_of(source, raw, media_type, ctx, str(ref))
        finally:
            source.close()
        if args.config:
            if args.raw:
                sys.stdout.buffer.write(config)
            else:
                sys.stdout.write(json.dumps(json.loads(config), indent=4) + "\n")
            return 0
        tags = _repo_tags(ref, ctx)
        sys.stdout.write(json.dumps(_skopeo_inspect(ref, top_digest, manifest, config, tags),
                                    indent=4) + "\n")
    return 0


def _image_of(source: ImageSource, raw: bytes, media_type: str, ctx: SystemContext,
              name: str) -> tuple[dict[str, Any], bytes]:
    """The (instance) manifest and its config, the instance chosen for the platform."""
    parsed = parse_manifest(raw, media_type)
    if isinstance(parsed, OCIIndex | DockerManifestList):
        entry = choose_instance(parsed, ctx.platform, image=name)
        raw, media_type = source.get_manifest(entry.digest)
        if manifest_digest(raw) != entry.digest:
            raise _ImageError(f"{name}: instance {entry.digest} has another digest")
    doc: dict[str, Any] = json.loads(raw)
    config_desc = doc["config"]
    stream = source.get_blob(config_desc["digest"], int(config_desc.get("size", -1)))
    try:
        config = stream.read()
    finally:
        stream.close()
    if manifest_digest(config) != config_desc["digest"]:
        raise _ImageError(f"{name}: the config does not match {config_desc['digest']}")
    return doc, config


def _repo_tags(ref: ImageReference, ctx: SystemContext) -> list[str]:
    if not isinstance(ref, DockerReference) or ref.short_name is not None:
        return []
    conf = ctx.registries_conf
    insecure = conf.is_insecure(ref.ref) if conf is not None else False
    with registry_client(ref.ref, ctx, insecure=insecure, conf=conf) as client:
        return client.list_tags(ref.ref.path)


def _skopeo_inspect(ref: ImageReference, digest: str, manifest: dict[str, Any],
                    config_bytes: bytes, tags: list[str]) -> dict[str, Any]:
    """skopeo's ``inspectOutput`` (cmd/skopeo/inspect.go)."""
    config: dict[str, Any] = json.loads(config_bytes)
    inner = config.get("config") or {}
    layers = manifest.get("layers") or []
    out: dict[str, Any] = {}
    if isinstance(ref, DockerReference):
        out["Name"] = ref.ref.name
    out.update({
        "Digest": digest,
        "RepoTags": tags,
        "Created": config.get("created"),
        "DockerVersion": config.get("docker_version", ""),
        "Labels": inner.get("Labels"),
        "Architecture": config.get("architecture", ""),
    })
    if config.get("variant"):
        out["Variant"] = config["variant"]
    out.update({
        "Os": config.get("os", ""),
        "Layers": [layer["digest"] for layer in layers],
        "LayersData": [{"MIMEType": layer.get("mediaType", ""), "Digest": layer["digest"],
                        "Size": layer.get("size", 0),
                        "Annotations": layer.get("annotations")} for layer in layers],
        "Env": inner.get("Env"),
    })
    return out


# -- pull and push ------------------------------------------------------------------


def _pull(args: argparse.Namespace) -> int:
    ref = parse_image_name(args.ref if _has_transport(args.ref) else f"docker://{args.ref}")
    policy = policy_of(args)
    with open_store(args) as store:
        ctx = context(args, creds=args.creds, tls_verify=args.tls_verify, store=store)
        progress = _progress(args)
        candidates = _pull_candidates(ref, args, ctx)
        last: Exception | None = None
        for source, name in candidates:
            dest = StorageReference.parse(name) if name else StorageReference(StoreSpec(), None)
            if progress is not None and len(candidates) > 1:
                print(f"Trying to pull {source}...", file=sys.stderr)
            try:
                result = copy_image(source, dest, policy=policy, src_ctx=ctx, dest_ctx=ctx,
                                    progress=progress)
            except (ManifestUnknown, NameUnknown, RegistryUnavailable) as exc:
                last = exc
                continue
            if progress is not None:
                progress.finish(_summary(result))
            assert result.config_digest is not None
            print(result.config_digest.partition(":")[2])
            return 0
        assert last is not None
        raise last


def _has_transport(text: str) -> bool:
    """Whether ``text`` starts with a transport name (else it is a docker reference)."""
    prefix, colon, _ = text.partition(":")
    return bool(colon) and prefix in transport_names()


def _pull_candidates(ref: ImageReference, args: argparse.Namespace, ctx: SystemContext
                     ) -> list[tuple[ImageReference, str | None]]:
    """(source, storage name) pairs to try in order: short names give several."""
    if isinstance(ref, DockerReference):
        if ref.short_name is not None:
            assert ctx.registries_conf is not None
            resolution = resolve_short_name(ref.short_name, ctx.registries_conf)
            if resolution.description and not args.quiet:
                print(resolution.description, file=sys.stderr)
            return [(DockerReference.from_reference(c), str(c)) for c in resolution.candidates]
        return [(ref, str(ref.ref))]
    return [(ref, args.name)]


def _push(args: argparse.Namespace) -> int:
    policy = policy_of(args)
    with open_store(args) as store:
        image = store.image(args.src)
        dest_text = args.dest or (image.names[0] if image.names else None)
        if dest_text is None:
            raise _ImageError(f"image {image.id[:12]} has no name: say where to push it")
        if not _has_transport(dest_text):
            dest_text = f"docker://{dest_text}"
        src = StorageReference.parse(args.src if args.src in image.names else image.id)
        ctx = context(args, creds=args.creds, tls_verify=args.tls_verify, store=store)
        progress = _progress(args)
        result = copy_image(src, parse_image_name(dest_text), policy=policy, src_ctx=ctx,
                            dest_ctx=ctx, progress=progress)
        if progress is not None:
            progress.finish(_summary(result))
    return 0
