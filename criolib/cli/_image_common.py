"""Options and helpers shared by the ``criolib image`` verbs (skopeo's and podman's flags)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path

from criolib.image import (
    Credentials,
    ImageError,
    Platform,
    Policy,
    RegistriesConf,
    SystemContext,
    host_platform,
    normalize_platform,
)
from criolib.storage import StorageConfig, Store

__all__ = [
    "add_common",
    "add_platform",
    "add_storage",
    "context",
    "open_store",
    "parse_bool",
    "parse_creds",
    "platform_of",
    "policy_of",
]


def parse_bool(text: str) -> bool:
    """``true``/``false`` as Go's flag package reads them (``--tls-verify=false``)."""
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


def _bool_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    parser.add_argument(flag, type=parse_bool, nargs="?", const=True, default=True,
                        metavar="BOOL", help=help_text)


def add_common(parser: argparse.ArgumentParser) -> None:
    """registries.conf, auth file and policy options."""
    parser.add_argument("--registries-conf", type=Path, metavar="FILE",
                        help="registries.conf to read (default: containers' search path)")
    parser.add_argument("--authfile", type=Path, metavar="FILE",
                        help="auth.json with registry credentials (default: "
                        "$REGISTRY_AUTH_FILE, then containers' and docker's files)")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="policy.json to enforce (default: ~/.config/containers/policy.json "
                        "or /etc/containers/policy.json)")
    parser.add_argument("--insecure-policy", action="store_true",
                        help="accept any image, whatever policy.json says")


def add_tls(parser: argparse.ArgumentParser, *prefixes: str) -> None:
    """``--creds`` and ``--tls-verify`` (or ``--src-...``/``--dest-...``) options."""
    for prefix in prefixes or ("",):
        parser.add_argument(f"--{prefix}creds", metavar="USER[:PASSWORD]",
                            help="registry credentials (asked for when PASSWORD is missing)")
        _bool_flag(parser, f"--{prefix}tls-verify",
                   "require HTTPS and verified certificates (default: true)")


def add_storage(parser: argparse.ArgumentParser) -> None:
    """Where ``containers-storage:`` lives (podman's global flags)."""
    parser.add_argument("--root", type=Path, metavar="DIR", help="the store's graph root")
    parser.add_argument("--runroot", type=Path, metavar="DIR", help="the store's run root")
    parser.add_argument("--storage-driver", metavar="NAME", help="graph driver: overlay, vfs")
    parser.add_argument("--storage-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="driver option (repeatable)")
    parser.add_argument("--storage-conf", type=Path, metavar="FILE",
                        help="storage.conf to read (default: containers' search path)")


def add_platform(parser: argparse.ArgumentParser) -> None:
    """``--override-arch``/``--override-os``/``--override-variant``."""
    parser.add_argument("--override-arch", metavar="ARCH",
                        help="pick the instance for this architecture, not the host's")
    parser.add_argument("--override-os", metavar="OS", help="... for this OS")
    parser.add_argument("--override-variant", metavar="VARIANT", help="... for this variant")


def platform_of(args: argparse.Namespace) -> Platform | None:
    """The platform the overrides ask for (the host's for what they leave out)."""
    arch = getattr(args, "override_arch", None)
    os_ = getattr(args, "override_os", None)
    variant = getattr(args, "override_variant", None)
    if not (arch or os_ or variant):
        return None
    host = host_platform()
    return normalize_platform(Platform(
        os=os_ or host.os, architecture=arch or host.architecture,
        variant=variant if (variant or arch) else host.variant))


def parse_creds(text: str | None) -> Credentials | None:
    """``USER[:PASSWORD]`` → :class:`Credentials` (the password asked for if missing)."""
    if text is None:
        return None
    user, colon, password = text.partition(":")
    if not user:
        raise ImageError("credentials need a user name: USER[:PASSWORD]")
    if not colon:
        if not sys.stdin.isatty():
            raise ImageError(f"no password for {user} and no terminal to ask on")
        password = getpass.getpass(f"Password for {user}: ")
    return Credentials(username=user, password=password)


def policy_of(args: argparse.Namespace) -> Policy:
    """``--insecure-policy``, else ``--policy FILE``, else the default policy.json."""
    if args.insecure_policy:
        return Policy.insecure_accept_anything()
    return Policy.load(args.policy)


def context(args: argparse.Namespace, *, creds: str | None = None, tls_verify: bool = True,
            store: Store | None = None) -> SystemContext:
    """The :class:`SystemContext` the options describe."""
    return SystemContext(registries_conf=RegistriesConf.load(args.registries_conf),
                         auth_file=args.authfile, credentials=parse_creds(creds),
                         insecure=not tls_verify, platform=platform_of(args), store=store)


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Store]:
    """The store ``--root``/``--runroot``/``--storage-driver`` or storage.conf names."""
    config = StorageConfig.load(args.storage_conf)
    driver = args.storage_driver or config.driver
    options = [*(config.driver_options if driver == config.driver else ()), *args.storage_opt]
    with Store(args.root or config.graphroot, args.runroot or config.runroot, driver,
               options) as store:
        yield store
