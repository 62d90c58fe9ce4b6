"""``criolib image tags|login|logout|rm|ls``: registries' tags and logins, the store's images.

skopeo ``list-tags``, podman ``login``/``logout``/``rmi``/``images``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from criolib.cli._image_common import (
    add_common,
    add_storage,
    add_tls,
    context,
    open_store,
    parse_bool,
)
from criolib.cli._image_progress import human_size
from criolib.image import (
    Credentials,
    DockerReference,
    ImageError,
    InvalidImageName,
    RegistryClient,
    Unauthorized,
    default_auth_file,
    login,
    logout,
    registry_client,
)
from criolib.image import RegistryError as _RegistryError
from criolib.storage import Image, ImageUnknown, Store

__all__ = ["register"]

_Sub = Any  # argparse's _SubParsersAction is private


def register(sub: _Sub) -> None:
    """Add the verbs to the ``criolib image`` subparsers."""
    p = sub.add_parser("tags", help="list a repository's tags (skopeo list-tags)")
    p.add_argument("repo", metavar="REPO", help="docker://host/repo or host/repo")
    add_common(p)
    add_tls(p)
    p.set_defaults(verb_handler=_tags)

    p = sub.add_parser("login", help="store credentials for a registry (podman login)")
    p.add_argument("host", metavar="HOST", help="registry[/namespace[/repo]]")
    p.add_argument("--username", "-u", help="user name")
    p.add_argument("--password", "-p", help="password (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password on stdin")
    p.add_argument("--authfile", metavar="FILE", help="auth.json to write")
    p.add_argument("--tls-verify", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="require HTTPS and verified certificates")
    p.add_argument("--verify", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="check the credentials with the registry first")
    p.set_defaults(verb_handler=_login)

    p = sub.add_parser("logout", help="remove stored credentials (podman logout)")
    p.add_argument("host", metavar="HOST", nargs="?", help="registry[/namespace[/repo]]")
    p.add_argument("--all", "-a", action="store_true", help="remove every stored login")
    p.add_argument("--authfile", metavar="FILE", help="auth.json to edit")
    p.set_defaults(verb_handler=_logout)

    p = sub.add_parser("rm", aliases=["rmi"], help="remove images from the store (podman rmi)")
    p.add_argument("names", nargs="+", metavar="IMAGE", help="name, id or id prefix")
    p.add_argument("--force", "-f", action="store_true", help="also remove their containers")
    add_storage(p)
    p.set_defaults(verb_handler=_rm)

    p = sub.add_parser("ls", aliases=["images"], help="list the store's images (podman images)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-trunc", action="store_true", help="show whole image ids")
    add_storage(p)
    p.set_defaults(verb_handler=_ls)


# -- registries ---------------------------------------------------------------------


def _tags(args: argparse.Namespace) -> int:
    text = args.repo.removeprefix("docker:")
    ref = DockerReference.parse(text if text.startswith("//") else f"//{text}")
    if ref.short_name is not None:
        raise InvalidImageName(f"{args.repo}: name the registry (host/repo)")
    ctx = context(args, creds=args.creds, tls_verify=args.tls_verify)
    conf = ctx.registries_conf
    insecure = conf.is_insecure(ref.ref) if conf is not None else False
    with registry_client(ref.ref, ctx, insecure=insecure, conf=conf) as client:
        tags = client.list_tags(ref.ref.path)
    sys.stdout.write(json.dumps({"Repository": ref.ref.name, "Tags": tags}, indent=4) + "\n")
    return 0


def _login(args: argparse.Namespace) -> int:
    username = args.username
    if not username:
        if not sys.stdin.isatty() or args.password_stdin:
            raise ImageError("login needs --username (-u)")
        username = input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise ImageError("login needs a password: --password-stdin or --password (-p)")
    host = args.host.removeprefix("docker://").rstrip("/")
    if args.verify:
        _check_login(host.split("/", 1)[0], username, password, insecure=not args.tls_verify)
    path = login(host, username, password, auth_file=args.authfile)
    print(f"Login Succeeded! (credentials in {path})")
    return 0


def _check_login(host: str, username: str, password: str, *, insecure: bool) -> None:
    """Make one authenticated request: 401 means the credentials are wrong.

    The request is for a repository nobody has (``criolib/login-check``): a
    registry that accepts the credentials answers 404 or 403, which is fine.
    """
    creds = Credentials(username=username, password=password)
    with RegistryClient(host, credentials=creds, insecure=insecure, retries=1) as client:
        try:
            client.list_tags("criolib/login-check")
        except Unauthorized as exc:
            raise ImageError(f"login to {host} as {username} failed: {exc}") from exc
        except _RegistryError as exc:
            if exc.status is None:  # no answer at all: not a login problem to store
                raise


def _logout(args: argparse.Namespace) -> int:
    if args.all:
        path = default_auth_file() if args.authfile is None else Path(args.authfile)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            data = {}
        hosts = list((data.get("auths") or {}).keys())
        for host in hosts:
            logout(host, auth_file=args.authfile)
        print(f"Removed login credentials for {len(hosts)} registries")
        return 0
    if not args.host:
        raise ImageError("logout needs a HOST or --all")
    host = args.host.removeprefix("docker://").rstrip("/")
    if not logout(host, auth_file=args.authfile):
        raise ImageError(f"not logged in to {host}")
    print(f"Removed login credentials for {host}")
    return 0


# -- the store ----------------------------------------------------------------------


def _rm(args: argparse.Namespace) -> int:
    failed = 0
    with open_store(args) as store:
        for name in args.names:
            try:
                image = store.image(name)
            except ImageUnknown as exc:
                print(f"criolib: error: {exc}", file=sys.stderr)
                failed += 1
                continue
            if name in image.names and len(image.names) > 1:
                store.remove_names(image.id, [name])
                print(f"Untagged: {name}")
                continue
            for untagged in image.names:
                print(f"Untagged: {untagged}")
            store.delete_image(image.id, force=args.force)
            print(f"Deleted: {image.id}")
    return 1 if failed else 0


def _split_name(name: str) -> tuple[str, str]:
    slash = name.rfind("/")
    colon = name.rfind(":")
    return (name[:colon], name[colon + 1:]) if colon > slash else (name, "<none>")


def _created(store: Store, image: Image) -> str:
    try:
        config = json.loads(store.big_data(image.id, "config"))
        return str(config.get("created") or "")
    except (ImageUnknown, ValueError):
        return image.created.isoformat() if image.created else ""


def _size(store: Store, image: Image) -> int:
    return sum(layer.uncompressed_size or 0 for layer in store.image_layers(image.id))


def _ls(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = [(image, _created(store, image), _size(store, image))
                for image in store.images()]
    if args.json:
        out = [{"Id": image.id, "Names": list(image.names), "Digest": image.digest,
                "Digests": list(image.digests), "Created": created, "Size": size}
               for image, created, size in rows]
        sys.stdout.write(json.dumps(out, indent=4) + "\n")
        return 0
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for image, created, size in rows:
        image_id = image.id if args.no_trunc else image.id[:12]
        for name in image.names or ("<none>:<none>",):
            repo, tag = _split_name(name) if name != "<none>:<none>" else ("<none>", "<none>")
            table.append((repo, tag, image_id, _when(created), human_size(size)))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
              + "  " + row[4])
    return 0


def _when(created: str) -> str:
    """Like podman: how long ago, from an RFC 3339 time."""
    try:
        then = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created or "unknown"
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    days = (dt.datetime.now(dt.UTC) - then).days
    if days >= 365:
        return f"{days // 365} years ago"
    if days >= 1:
        return f"{days} days ago"
    return "less than a day ago"

