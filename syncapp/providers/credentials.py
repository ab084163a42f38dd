"""Credential files (a Google service account's key) are read only from PROVIDER_CREDENTIALS_DIR.

A tenant names its file in its config; whoever may edit one tenant must not be able to point it
at another tenant's key, or at any file the service can read. So a file is refused, naming the
config key, when its path leads outside the folder (given so, or through a symlink), when it is
not a regular file, or when others than the service's user and group may read or write it.
A relative path is taken inside the folder.
"""

import os
import stat
from pathlib import Path

from django.conf import settings

from .base import ConfigError


def credentials_dir() -> Path:
    return Path(settings.BALLAST_PROVIDER_CREDENTIALS_DIR)


def confined_path(value: str, key: str) -> Path:
    """The file's real path, inside the folder; ConfigError naming `key` when it leads out."""
    if "\x00" in value:
        raise ConfigError(f"{key}: a path cannot hold a NUL character")
    folder = credentials_dir().resolve()
    given = folder / value  # an absolute value stays itself
    real = given.resolve()
    if not real.is_relative_to(folder):
        if Path(os.path.normpath(given)).is_relative_to(folder):
            raise ConfigError(f"{key}: {value} is a symlink leading out of PROVIDER_CREDENTIALS_DIR ({folder})")
        raise ConfigError(f"{key}: {value} is outside PROVIDER_CREDENTIALS_DIR ({folder}); put the file there")
    return real


def _refuse_loose(mode: int, value: str, key: str) -> None:
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{key}: {value} is not a regular file")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{key}: {value} may be read or written by anyone (mode {stat.S_IMODE(mode):04o}); "
                          f"let only the service's user and group (chmod o-rwx {value})")


def check_credentials_file(value: str, key: str) -> None:
    """What a tenant's config may name, checked when it is saved: a file that is not there yet is
    let through (it is refused when used)."""
    path = confined_path(value, key)
    try:
        _refuse_loose(path.stat().st_mode, value, key)
    except FileNotFoundError:
        pass


def read_credentials_file(value: str, key: str) -> bytes:
    """The file's bytes, checked on the very file opened (its last part not followed if it became
    a symlink since the path was resolved). ConfigError naming `key` when it may not be used or
    cannot be read."""
    path = confined_path(value, key)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{key}: {value} cannot be read ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as file:
        _refuse_loose(os.fstat(descriptor).st_mode, value, key)
        return file.read()
