"""Errors of :mod:`criolib.image` (references, registries, manifests, transports and copying).

::

    criolib.errors.CriolibError
    └── ImageError
        ├── InvalidArgument (ValueError)     a bad argument in code (concurrency, credentials...)
        ├── DigestMismatch (ValueError)      content does not hash to its digest, or its size is off
        ├── ManifestError (ValueError)       a manifest, index or image config is malformed
        │   ├── UnsupportedManifest          Docker schema 1, or a media type criolib cannot read
        │   └── UnsupportedConversion        OCI ⇄ Docker schema2 cannot hold it (zstd, artifacts)
        ├── InvalidDigest (ValueError)       not sha256:<64 hex> / sha512:<128 hex>
        ├── InvalidPlatform (ValueError)     a platform string such as "linux/arm64/v8" is malformed
        ├── NoMatchingPlatform (LookupError) an index has no instance for the platform
        ├── InvalidReference (ValueError)    not a docker reference (distribution/reference grammar)
        ├── RegistriesConfError (ValueError) registries.conf, a drop-in or alias cache malformed
        ├── BlockedRegistry (PermissionError) registries.conf blocks pulls from that registry
        ├── ShortNameError (LookupError)     a short name has no alias and no search registries
        │   └── AmbiguousShortName           enforcing mode, several candidates, nobody to ask
        ├── CredentialsError                 auth.json / docker config.json unreadable or unwritable
        │   └── UnsupportedCredentialHelper  credentials live in a helper criolib does not run
        ├── PolicyError                      policy.json missing or malformed
        │   └── UnsupportedPolicyRequirement signedBy, sigstoreSigned...: criolib cannot verify
        ├── PolicyDenied (PermissionError)   policy.json rejects the image
        ├── TransportError                   a transport (oci:, dir:, docker-archive:...) failed
        │   ├── UnknownTransport (LookupError)
        │   ├── DuplicateTransport (ValueError)
        │   ├── InvalidImageName (ValueError) "transport:name" does not parse
        │   ├── ImageNotFound (LookupError)  no image under that path / ref name / tag / @N
        │   ├── BlobNotFound (LookupError)
        │   └── CorruptImage (ValueError)    a layout or archive that breaks its format
        └── RegistryError                    a registry refused, failed, or answered nonsense
            ├── Unauthorized                 401 after every auth attempt (names host, repo, creds)
            ├── Denied                       403 / DENIED, or a token without the scope asked for
            ├── ManifestUnknown (LookupError)
            ├── BlobUnknown (LookupError)
            ├── NameUnknown (LookupError)    no such repository
            ├── RegistryUnavailable          retries exhausted; names the last cause
            │   └── TooManyRequests          429 to the end
            └── InvalidResponse              the registry broke the protocol (sizes, headers, JSON)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from criolib.errors import CriolibError

__all__ = [
    "AmbiguousShortName",
    "BlobNotFound",
    "BlobUnknown",
    "BlockedRegistry",
    "CorruptImage",
    "CredentialsError",
    "Denied",
    "DigestMismatch",
    "DuplicateTransport",
    "ImageError",
    "ImageNotFound",
    "InvalidArgument",
    "InvalidDigest",
    "InvalidImageName",
    "InvalidPlatform",
    "InvalidReference",
    "InvalidResponse",
    "ManifestError",
    "ManifestUnknown",
    "NameUnknown",
    "NoMatchingPlatform",
    "PolicyDenied",
    "PolicyError",
    "RegistriesConfError",
    "RegistryError",
    "RegistryUnavailable",
    "ShortNameError",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnknownTransport",
    "UnsupportedConversion",
    "UnsupportedCredentialHelper",
    "UnsupportedManifest",
    "UnsupportedPolicyRequirement",
]


class ImageError(CriolibError):
    """Base class of every error raised by :mod:`criolib.image`."""


class InvalidArgument(ImageError, ValueError):
    """An argument passed in code is out of range or of the wrong type.

    ``argument`` names it (``concurrency``, ``credentials``...), so a caller far from
    the call (copy_image → RegistryClient) sees which one.
    """

    def __init__(self, message: str, *, argument: str = "") -> None:
        super().__init__(message)
        self.argument = argument


# -- registries (distribution-spec v1.1 spec.md "Error Codes"; RFC 9110 status codes) --------


class DigestMismatch(ImageError, ValueError):
    """Content does not hash to the digest it was asked for, or has the wrong size.

    image-spec v1.1 descriptor.md "Digests" ("verify ... before use"). ``what`` names
    the object (``host/repo@digest``); ``expected``/``actual`` are digests and
    ``expected_size``/``actual_size`` byte counts (-1 where unknown). Nothing that
    raised this may be committed.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str = "",
        expected: str = "",
        actual: str = "",
        expected_size: int = -1,
        actual_size: int = -1,
    ) -> None:
        super().__init__(message)
        self.what = what
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size


class RegistryError(ImageError):
    """A registry refused a request, failed, or answered something that breaks the protocol.

    distribution-spec v1.1 spec.md "Error Codes": ``errors`` holds the body's
    ``{code, message, detail}`` entries as sent; ``codes`` their codes. ``host``,
    ``repository`` and ``reference`` (tag or digest) name what was asked for;
    ``status`` is the HTTP status, ``None`` when no answer came.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str,
        repository: str | None = None,
        reference: str | None = None,
        status: int | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.host = host
        self.repository = repository
        self.reference = reference
        self.status = status
        self.errors = tuple(dict(e) for e in errors)

    @property
    def codes(self) -> tuple[str, ...]:
        """The registry's error codes, such as ``MANIFEST_UNKNOWN``, in body order."""
        return tuple(str(e.get("code", "")) for e in self.errors)


class Unauthorized(RegistryError):
    """401 after every auth attempt (RFC 9110 §15.5.2; token.md).

    ``credentials_given`` says whether a user name or token was sent: without one
    the fix is to log in, with one it is to check it.
    """

    def __init__(self, message: str, *, credentials_given: bool, **context: Any) -> None:
        super().__init__(message, **context)
        self.credentials_given = credentials_given


class Denied(RegistryError):
    """403 or ``DENIED``, or a token granted without the scope the request needs."""


class ManifestUnknown(RegistryError, LookupError):
    """``MANIFEST_UNKNOWN``: no manifest under that tag or digest."""


class BlobUnknown(RegistryError, LookupError):
    """``BLOB_UNKNOWN``: no blob with that digest in the repository."""


class NameUnknown(RegistryError, LookupError):
    """``NAME_UNKNOWN``: the repository does not exist."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or kept failing (5xx, dropped connections).

    Raised when the retries are used up; ``cause`` describes the last failure.
    """

    def __init__(self, message: str, *, cause: str = "", **context: Any) -> None:
        super().__init__(message, **context)
        self.cause = cause


class TooManyRequests(RegistryUnavailable):
    """429 (``TOOMANYREQUESTS``) on every attempt, Retry-After honoured in between."""


class InvalidResponse(RegistryError):
    """The registry broke the protocol: a size that lies, a bad header, a body too big."""


# -- manifests, platforms and transports (image-spec v1.1; containers/image transports) ---


class ManifestError(ImageError, ValueError):
    """A manifest, index or image config breaks its spec (image-spec v1.1 manifest.md).

    ``digest`` names the document (the digest of its bytes) and ``field`` the JSON path
    of the fault (``layers[0].digest``), either empty where it does not apply.
    """

    def __init__(self, message: str, *, digest: str = "", field: str = "") -> None:
        super().__init__(message)
        self.digest = digest
        self.field = field


class UnsupportedManifest(ManifestError):
    """A manifest criolib does not read: Docker schema 1, or an unknown media type."""


class UnsupportedConversion(ManifestError):
    """OCI ⇄ Docker schema2 conversion cannot express the document (zstd layers, artifacts)."""


class InvalidDigest(ImageError, ValueError):
    """A digest that is not ``sha256:`` + 64 or ``sha512:`` + 128 lowercase hex digits."""


class InvalidPlatform(ImageError, ValueError):
    """A platform string (``os/arch[/variant]``) or object that does not parse."""


class NoMatchingPlatform(ImageError, LookupError):
    """An image index has no instance for the platform asked for.

    ``wanted`` is that platform and ``available`` the platforms the index offers
    (attestations left out), both as ``os/arch[/variant]`` strings.
    """

    def __init__(self, message: str, *, wanted: str = "",
                 available: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.wanted = wanted
        self.available = tuple(available)


class TransportError(ImageError):
    """A transport (``oci:``, ``dir:``, ``docker-archive:``...) could not read or write."""


class UnknownTransport(TransportError, LookupError):
    """No transport of that name is registered; the message lists those that are."""


class DuplicateTransport(TransportError, ValueError):
    """A second, different transport was registered under a name already taken."""


class InvalidImageName(TransportError, ValueError):
    """A ``transport:name`` string (or the name part) does not parse for its transport."""


class ImageNotFound(TransportError, LookupError):
    """No image at that path, ref name, tag or ``@N`` index; names what is there."""


class BlobNotFound(TransportError, LookupError):
    """The image source holds no blob with that digest."""


class CorruptImage(TransportError, ValueError):
    """A layout, directory or archive that breaks its format (names the file and fault)."""


# -- references, registries.conf, short names, credentials, policy.json ---------------------


class InvalidReference(ImageError, ValueError):
    """Text that is not a docker image reference (distribution/reference ``reference.go``).

    ``reference`` is the input; the message says what is wrong with it (format,
    uppercase, length, digest algorithm or length).
    """

    def __init__(self, message: str, *, reference: str = "") -> None:
        super().__init__(message)
        self.reference = reference


class RegistriesConfError(ImageError, ValueError):
    """A registries.conf, drop-in or short-name alias file that breaks its format.

    containers-registries.conf(5), containers-registries.conf.d(5). ``path`` names
    the file and ``key`` the setting at fault (``registry[2].mirror[0].location``),
    either empty where it does not apply.
    """

    def __init__(self, message: str, *, path: str = "", key: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class BlockedRegistry(ImageError, PermissionError):
    """registries.conf marks the registry ``blocked = true`` (containers-registries.conf(5)).

    ``reference`` is the image asked for and ``prefix`` the ``[[registry]]`` entry
    that blocks it.
    """

    def __init__(self, message: str, *, reference: str = "", prefix: str = "") -> None:
        super().__init__(message)
        self.reference = reference
        self.prefix = prefix


class ShortNameError(ImageError, LookupError):
    """A short name that cannot be resolved: no alias and no unqualified-search registries.

    containers-registries.conf(5) "Short-Name Aliasing". ``name`` is the short name.
    """

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class AmbiguousShortName(ShortNameError):
    """``short-name-mode = "enforcing"`` with several candidates and no terminal to ask.

    ``candidates`` are the fully qualified references it could mean, in order.
    """

    def __init__(self, message: str, *, name: str = "", candidates: Sequence[str] = ()) -> None:
        super().__init__(message, name=name)
        self.candidates = tuple(candidates)


class CredentialsError(ImageError):
    """An auth.json or docker config.json that cannot be read or written (containers-auth.json(5)).

    ``path`` names the file. Messages never include a secret.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class UnsupportedCredentialHelper(CredentialsError):
    """The credentials for a registry live in a credential helper, which criolib does not run.

    ``helper`` is the helper's name (``credHelpers``/``credsStore`` of an auth file,
    or registries.conf ``credential-helpers``), ``registry`` the host asked about.
    """

    def __init__(self, message: str, *, helper: str = "", registry: str = "",
                 path: str = "") -> None:
        super().__init__(message, path=path)
        self.helper = helper
        self.registry = registry


class PolicyError(ImageError):
    """policy.json is missing or malformed (containers-policy.json(5)).

    ``path`` names the file and ``field`` the JSON location at fault
    (``transports.docker["docker.io/library"][0]``), either empty where it does not apply.
    """

    def __init__(self, message: str, *, path: str = "", field: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class UnsupportedPolicyRequirement(PolicyError):
    """A policy requirement criolib cannot evaluate: it verifies no signatures.

    ``requirement`` is the requirement's ``type`` (``signedBy``, ``sigstoreSigned``,
    ``signedBaseLayer`` or an unknown one). Such a requirement is never treated as met.
    """

    def __init__(self, message: str, *, requirement: str = "", path: str = "",
                 field: str = "") -> None:
        super().__init__(message, path=path, field=field)
        self.requirement = requirement


class PolicyDenied(ImageError, PermissionError):
    """policy.json rejects the image (a ``reject`` requirement applies).

    ``image`` is ``transport:scope`` as evaluated and ``scope`` the policy entry
    that matched (``transports.docker["docker.io"]`` or ``default``).
    """

    def __init__(self, message: str, *, image: str = "", scope: str = "") -> None:
        super().__init__(message)
        self.image = image
        self.scope = scope


# -- copying (criolib.image._copy) ----------------------------------------------------------


class CopyCancelled(ImageError):
    """A copy stopped before its end: another blob failed, or the caller interrupted it.

    Tree: ``ImageError`` → ``CopyCancelled``. Readers of a blob still downloading
    see it when the copy gives up; the copy itself raises the failure that stopped it.
    """


__all__ += ["CopyCancelled"]
