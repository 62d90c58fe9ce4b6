"""The test bed's images, built on this machine from Debian's busybox-static.

Every image is a function of the busybox binary and this file: two builds on the
same machine give the same bytes and so the same digests. The images, by name:

``busybox``
    one gzip layer: /bin/busybox, its applets as symlinks, /etc/passwd and
    /etc/group with a ``tester`` user (uid 1000, in groups wheel and audio).
``multilayer``, ``multilayer-zstd``, ``multilayer-uncompressed``
    the same three layers (see :data:`MULTILAYER_FILES`) compressed with gzip,
    zstd and not at all: whiteouts, an opaque directory, a hard link, absolute
    and relative symlinks, setuid/setgid/sticky modes, an empty directory, a fifo,
    an xattr and a file owned by uid 1000; a config with Entrypoint, Cmd, Env,
    WorkingDir, Volumes, ExposedPorts, StopSignal and Labels.
``multiarch``
    an OCI index with linux/amd64, linux/arm64/v8 and an ``unknown/unknown``
    attestation manifest, the way BuildKit writes them. Each real instance carries
    /etc/criolib-platform naming its platform; only the host's instance holds
    busybox (no foreign binary is at hand to put in the other).
``large`` (only when asked for)
    hundreds of MB in many files over several layers, for benchmarks.

All are written into one OCI image layout, and the single-manifest ones also as
docker-archive tarballs. :func:`assemble` writes them; building them into a
directory safely, and reusing a finished build, is :mod:`criolib.testing._build`'s job.
"""

from __future__ import annotations

import platform
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.testing._errors import UnknownTestImage
from criolib.testing._layout import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    OCILayoutWriter,
    write_docker_archive,
)
from criolib.testing._tar import Compression, Entry, LayerBlob

__all__ = [
    "GROUP",
    "LARGE_IMAGE",
    "MULTILAYER_FILES",
    "PASSWD",
    "TestImage",
    "TestImages",
    "assemble",
    "busybox_rootfs",
    "host_platform",
]

#: The name of the optional large image.
LARGE_IMAGE = "large"
_CREATED = "2000-01-01T00:00:00Z"
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_REPOSITORY_PREFIX = "testbed"

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}

#: The test images' /etc/passwd and /etc/group.
PASSWD = b"""root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
tester:x:1000:1000:criolib tester:/home/tester:/bin/sh
"""
GROUP = b"""root:x:0:
daemon:x:1:
wheel:x:10:tester
audio:x:29:tester
nogroup:x:65534:
tester:x:1000:
"""


def host_platform() -> dict[str, str]:
    """This machine's platform in OCI terms (os, architecture, variant)."""
    machine = platform.machine()
    plat = {"os": "linux", "architecture": _GOARCH.get(machine, machine)}
    if plat["architecture"] == "arm64":
        plat["variant"] = "v8"
    return plat


@attrs.frozen
class TestImage:
    """One image of the test bed as it sits in the OCI layout."""

    __test__ = False

    name: str
    repository: str
    tag: str
    descriptor: Descriptor
    config_digest: str | None = None
    diff_ids: tuple[str, ...] = ()
    layers: tuple[Descriptor, ...] = ()
    platform: Mapping[str, str] | None = None
    instances: tuple[TestImage, ...] = ()
    archive: Path | None = None

    @property
    def digest(self) -> str:
        """The manifest (or index) digest."""
        return self.descriptor.digest

    @property
    def reference(self) -> str:
        """``repository:tag``, relative to a registry host."""
        return f"{self.repository}:{self.tag}"

    @property
    def is_index(self) -> bool:
        return self.descriptor.media_type == MEDIA_TYPE_INDEX


@attrs.frozen
class TestImages:
    """Every built image, and where the OCI layout holding them lives."""

    __test__ = False

    root: Path
    layout: Path
    images: Mapping[str, TestImage]

    def __getitem__(self, name: str) -> TestImage:
        """The image called ``name``; :class:`UnknownTestImage` (a KeyError) if none is."""
        try:
            return self.images[name]
        except KeyError:
            raise UnknownTestImage(
                f"test bed at {self.root}: no image {name!r} (built: {', '.join(self.images)})"
            ) from None

    def __iter__(self) -> Iterator[TestImage]:
        return iter(self.images.values())


# -- content ---------------------------------------------------------------------------


def _with_parents(entries: Sequence[Entry]) -> list[Entry]:
    """Insert missing parent directories just before their first child.

    The order is otherwise kept: a hard link must follow its target.
    """
    have = {e.path for e in entries}
    out: list[Entry] = []
    for e in entries:
        parts = e.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in have:
                have.add(parent)
                out.append(Entry.directory(parent))
        out.append(e)
    return out


def busybox_rootfs(busybox: bytes, applets: Sequence[str]) -> list[Entry]:
    """A minimal root filesystem: busybox, its applets, users and groups."""
    entries = [
        Entry.directory("bin"), Entry.directory("dev"), Entry.directory("etc"),
        Entry.directory("home"), Entry.directory("home/tester", uid=1000, gid=1000),
        Entry.directory("proc"), Entry.directory("root", 0o700), Entry.directory("sys"),
        Entry.directory("tmp", 0o1777), Entry.directory("var"),
        Entry.directory("var/tmp", 0o1777),
        Entry("bin/busybox", mode=0o755, data=busybox),
        Entry("etc/passwd", data=PASSWD),
        Entry("etc/group", data=GROUP),
    ]
    entries += [Entry.symlink(a, "/bin/busybox") for a in applets if a != "bin/busybox"]
    return _with_parents(sorted(entries, key=lambda e: e.path.split("/")))


#: The changes the three multilayer images make, layer by layer, on top of busybox.
MULTILAYER_FILES: tuple[tuple[Entry, ...], ...] = (
    (
        Entry.directory("data"),
        Entry("data/keep.txt", data=b"kept from layer 1\n"),
        Entry("data/delete-me.txt", data=b"deleted by layer 2\n"),
        Entry("data/overwritten.txt", data=b"layer 1 version\n"),
        Entry("data/owned-by-tester.txt", mode=0o640, uid=1000, gid=1000, data=b"mine\n"),
        Entry.directory("data/replaced"),
        Entry("data/replaced/old-a.txt", data=b"hidden by the opaque dir of layer 2\n"),
        Entry.directory("data/replaced/sub"),
        Entry("data/replaced/sub/deep.txt", data=b"hidden too\n"),
        Entry.directory("data/removed-dir"),
        Entry("data/removed-dir/child.txt", data=b"removed with its dir by layer 3\n"),
    ),
    (
        Entry.directory("data"),
        Entry.whiteout("data/delete-me.txt"),
        Entry.directory("data/replaced"),
        Entry.opaque("data/replaced"),
        Entry("data/replaced/new.txt", data=b"the only file left in replaced/\n"),
        Entry("data/hardlink-src.txt", data=b"one inode, two names\n"),
        Entry.hardlink("data/hardlink-dst.txt", "data/hardlink-src.txt"),
        Entry.symlink("data/abs-symlink", "/data/keep.txt"),
        Entry.symlink("data/rel-symlink", "../bin/busybox"),
        Entry("data/setuid-bin", mode=0o4755, data=b"#!/bin/sh\necho setuid\n"),
        Entry.directory("data/setgid-dir", 0o2775),
        Entry.directory("data/sticky-dir", 0o1777),
        Entry.directory("data/empty-dir"),
        Entry("data/fifo", kind="fifo", mode=0o644),
        Entry("data/xattr-file", data=b"has an xattr\n",
              xattrs=(("user.criolib.test", "layer2"),)),
        Entry("data/overwritten.txt", data=b"layer 2 version\n"),
    ),
    (
        Entry.directory("data"),
        Entry.whiteout("data/removed-dir"),
        Entry("data/layer3.txt", data=b"added by layer 3\n"),
        Entry.directory("etc"),
        Entry("etc/criolib-image", data=b"multilayer\n"),
    ),
)

MULTILAYER_CONFIG: dict[str, Any] = {
    "User": "",
    "Env": [_PATH, "CRIOLIB_IMAGE=multilayer", "GREETING=hello world"],
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["cat /data/keep.txt"],
    "WorkingDir": "/data",
    "Volumes": {"/data/volume": {}},
    "ExposedPorts": {"8080/tcp": {}},
    "StopSignal": "SIGQUIT",
    "Labels": {"org.criolib.test": "multilayer"},
}


# -- assembling images -----------------------------------------------------------------


@attrs.define
class _Builder:
    layout: OCILayoutWriter
    archives: Path
    images: dict[str, TestImage] = attrs.Factory(dict)

    def layer(self, entries: Sequence[Entry] | Iterator[Entry], compression: Compression) -> (
        tuple[Descriptor, LayerBlob]
    ):
        return self.layout.add_layer(entries, compression)

    def image(
        self,
        name: str,
        layers: Sequence[tuple[Descriptor, LayerBlob]],
        *,
        config: Mapping[str, Any],
        plat: Mapping[str, str],
        history: Sequence[Mapping[str, Any]],
        tag: str = "latest",
        repository: str | None = None,
        archive: bool = True,
        register: bool = True,
    ) -> TestImage:
        diff_ids = [blob.diff_id for _, blob in layers]
        config_doc: dict[str, Any] = {"created": _CREATED, **plat, "config": dict(config),
                                      "rootfs": {"type": "layers", "diff_ids": diff_ids},
                                      "history": list(history)}
        config_desc = self.layout.add_json(config_doc, MEDIA_TYPE_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [d.to_json() for d, _ in layers],
            "annotations": {"org.opencontainers.image.created": _CREATED},
        }
        desc = self.layout.add_json(manifest, MEDIA_TYPE_MANIFEST)
        image = TestImage(
            name=name, repository=repository or f"{_REPOSITORY_PREFIX}/{name}", tag=tag,
            descriptor=desc, config_digest=config_desc.digest, diff_ids=tuple(diff_ids),
            layers=tuple(d for d, _ in layers), platform=dict(plat),
        )
        if archive:
            dest = self.archives / f"{name}.tar"
            write_docker_archive(self.layout, desc, diff_ids=diff_ids,
                                 uncompressed_sizes=[b.uncompressed_size for _, b in layers],
                                 repo_tag=image.reference, dest=dest)
            image = attrs.evolve(image, archive=dest)
        return self.add(image) if register else image

    def add(self, image: TestImage) -> TestImage:
        self.layout.tag(image.descriptor, image.name)
        self.images[image.name] = image
        return image


def _history(*steps: str, empty: Sequence[str] = ()) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"created": _CREATED, "created_by": f"criolib.testing: {s}"}
                                 for s in steps]
    out += [{"created": _CREATED, "created_by": f"criolib.testing: {s}", "empty_layer": True}
            for s in empty]
    return out


def _build_busybox(b: _Builder, rootfs: list[Entry], host: dict[str, str]) -> Descriptor:
    layer = b.layer(rootfs, "gzip")
    b.image("busybox", [layer], plat=host, config={"Env": [_PATH], "Cmd": ["sh"]},
            history=_history("busybox rootfs"))
    return layer[0]


def _build_multilayer(b: _Builder, rootfs: list[Entry], host: dict[str, str]) -> None:
    for compression, name in (("gzip", "multilayer"), ("zstd", "multilayer-zstd"),
                              ("none", "multilayer-uncompressed")):
        comp: Compression = compression  # type: ignore[assignment]
        layers = [b.layer(_with_parents([*rootfs, *MULTILAYER_FILES[0]]), comp)]
        layers += [b.layer(_with_parents(list(files)), comp) for files in MULTILAYER_FILES[1:]]
        b.image(name, layers, plat=host, config=MULTILAYER_CONFIG,
                history=_history("busybox rootfs and /data", "whiteouts, links, modes",
                                 "remove a directory", empty=["ENV GREETING"]))


def _build_multiarch(b: _Builder, rootfs: list[Entry], host: dict[str, str]) -> None:
    instances = []
    for plat in ({"os": "linux", "architecture": "amd64"},
                 {"os": "linux", "architecture": "arm64", "variant": "v8"}):
        label = "/".join(plat.values())
        marker = [Entry.directory("etc"), Entry("etc/criolib-platform", data=f"{label}\n".encode())]
        native = plat["architecture"] == host["architecture"]
        layers = [b.layer(rootfs, "gzip")] if native else []
        layers.append(b.layer(marker, "gzip"))
        img = b.image(f"multiarch-{label.replace('/', '-')}", layers, plat=plat,
                      config={"Env": [_PATH], "Cmd": ["cat", "/etc/criolib-platform"]},
                      history=_history(*(["busybox rootfs"] if native else []), "platform marker"),
                      repository=f"{_REPOSITORY_PREFIX}/multiarch", archive=False,
                      register=False)
        instances.append(img)
    # BuildKit's provenance attestation: an instance whose platform is unknown/unknown.
    statement = {"_type": "https://in-toto.io/Statement/v0.1",
                 "predicateType": "https://slsa.dev/provenance/v0.2",
                 "subject": [{"name": "criolib-testbed", "digest": {
                     "sha256": instances[0].digest.partition(":")[2]}}],
                 "predicate": {"builder": {"id": "criolib.testing"}}}
    att_layer = b.layout.add_json(statement, "application/vnd.in-toto+json")
    att_layer = attrs.evolve(att_layer, annotations={
        "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})
    att_config = b.layout.add_json(
        {"architecture": "unknown", "os": "unknown", "config": {},
         "rootfs": {"type": "layers", "diff_ids": [att_layer.digest]}}, MEDIA_TYPE_CONFIG)
    att = b.layout.add_json({"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
                             "config": att_config.to_json(), "layers": [att_layer.to_json()]},
                            MEDIA_TYPE_MANIFEST)
    att = attrs.evolve(att, platform={"architecture": "unknown", "os": "unknown"},
                       annotations={"vnd.docker.reference.digest": instances[0].digest,
                                    "vnd.docker.reference.type": "attestation-manifest"})
    entries = [attrs.evolve(i.descriptor, platform=dict(i.platform or {})) for i in instances]
    index = b.layout.add_json({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                               "manifests": [d.to_json() for d in [*entries, att]]},
                              MEDIA_TYPE_INDEX)
    b.add(TestImage(name="multiarch", repository=f"{_REPOSITORY_PREFIX}/multiarch",
                    tag="latest", descriptor=index, instances=tuple(instances)))


def _large_entries(layer: int, files: int, size: int, seed: int) -> Iterator[Entry]:
    """Deterministic pseudo-random files: about half text-like, half incompressible."""
    rng = random.Random(seed * 1000 + layer)  # noqa: S311 - reproducible test data
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(512)]
    text = b" ".join(rng.choice(words) for _ in range(40000))  # ~300 KiB of "text"
    per_file = max(1, size // max(files, 1))
    yield Entry.directory(f"large{layer}")
    dirs = max(1, files // 200)
    for d in range(dirs):
        yield Entry.directory(f"large{layer}/d{d:04d}")
    for i in range(files):
        n = max(0, int(rng.expovariate(1 / per_file)))
        if i % 2:
            chunks: list[bytes] = [rng.randbytes(min(n - off, 1 << 20)) for off in
                                   range(0, n, 1 << 20)]
        else:
            start = rng.randrange(len(text))
            chunks = [(text[start:] + text)[: min(n - off, len(text))] for off in
                      range(0, n, len(text))]
        mode = 0o755 if i % 17 == 0 else 0o644
        yield Entry(f"large{layer}/d{i % dirs:04d}/f{i:06d}", mode=mode, data=chunks,
                    size=sum(len(c) for c in chunks))


def _build_large(b: _Builder, rootfs: list[Entry], host: dict[str, str], *, size: int,
                 files: int, layers: int) -> None:
    built = [b.layer(rootfs, "gzip")]
    built += [b.layer(_large_entries(i, files // layers, size // layers, seed=7), "gzip")
              for i in range(layers)]
    b.image(LARGE_IMAGE, built, plat=host, config={"Env": [_PATH], "Cmd": ["sh"]},
            history=_history("busybox rootfs", *(f"large layer {i}" for i in range(layers))))


def assemble(
    layout_root: Path,
    archives: Path,
    busybox: bytes,
    applets: Sequence[str],
    *,
    large: tuple[int, int, int] | None = None,
) -> dict[str, TestImage]:
    """Write every test image into a new OCI layout at ``layout_root``.

    ``archives`` (an existing directory) receives the docker-archive tarballs;
    ``large`` is ``(size, files, layers)`` of the large image, ``None`` for none.
    Returns the images by name; their archive paths point into ``archives``.
    """
    layout = OCILayoutWriter(layout_root)
    b = _Builder(layout, archives)
    host = host_platform()
    rootfs = busybox_rootfs(busybox, applets)
    _build_busybox(b, rootfs, host)
    _build_multilayer(b, rootfs, host)
    _build_multiarch(b, rootfs, host)
    if large is not None:
        size, files, layers = large
        _build_large(b, rootfs, host, size=size, files=files, layers=layers)
    layout.finish()
    return dict(b.images)
