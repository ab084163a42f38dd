"""A credentials_file is used only from PROVIDER_CREDENTIALS_DIR, and only when others cannot read it."""

import json

import pytest

from syncapp.providers import ConfigError
from syncapp.providers.credentials import read_credentials_file
from syncapp.providers.google import GoogleProvider

SUBJECT = "admin@example.org"


@pytest.fixture
def folder(tmp_path, settings):
    """PROVIDER_CREDENTIALS_DIR, beside another tenant's folder and a file of the system's."""
    inside = tmp_path / "credentials"
    inside.mkdir()
    settings.BALLAST_PROVIDER_CREDENTIALS_DIR = inside
    (tmp_path / "other-tenant").mkdir()
    key = tmp_path / "other-tenant" / "key.json"
    key.write_text('{"type": "service_account"}')
    key.chmod(0o600)
    return inside


def key_file(path, mode=0o600):
    path.write_text(json.dumps({"type": "service_account"}))
    path.chmod(mode)
    return path


def refused(value: str) -> str:
    """The message with which a tenant's save and a provider's use both refuse `value`."""
    with pytest.raises(ConfigError) as saved:
        GoogleProvider.clean_config({"credentials_file": value, "subject": SUBJECT})
    with pytest.raises(ConfigError) as used:
        GoogleProvider({"credentials_file": value, "subject": SUBJECT})
    assert str(saved.value) == str(used.value)
    return str(used.value)


def test_a_path_outside_the_folder_is_refused_naming_the_key(folder):
    other = folder.parent / "other-tenant" / "key.json"
    message = refused(str(other))
    assert message == f"credentials_file: {other} is outside PROVIDER_CREDENTIALS_DIR ({folder}); put the file there"
    assert "outside PROVIDER_CREDENTIALS_DIR" in refused("../other-tenant/key.json")  # climbing out of it too
    assert "outside PROVIDER_CREDENTIALS_DIR" in refused("/etc/passwd")


def test_a_symlink_leading_out_of_the_folder_is_refused(folder):
    (folder / "acme.json").symlink_to(folder.parent / "other-tenant" / "key.json")
    assert refused("acme.json") == f"credentials_file: acme.json is a symlink leading out of PROVIDER_CREDENTIALS_DIR ({folder})"
    (folder / "keys").symlink_to(folder.parent / "other-tenant", target_is_directory=True)
    assert "symlink leading out" in refused("keys/key.json")  # a folder on the way counts as well


def test_a_file_others_may_read_is_refused_with_its_mode(folder):
    key_file(folder / "acme.json", 0o644)
    assert refused("acme.json") == ("credentials_file: acme.json may be read or written by anyone (mode 0644); "
                                    "let only the service's user and group (chmod o-rwx acme.json)")
    key_file(folder / "acme.json", 0o602)
    assert "(mode 0602)" in refused("acme.json")


def test_a_folder_or_a_nul_is_refused(folder):
    (folder / "sub").mkdir()
    (folder / "sub").chmod(0o700)
    assert refused("sub") == "credentials_file: sub is not a regular file"
    assert refused("acme\x00.json") == "credentials_file: a path cannot hold a NUL character"


def test_a_missing_file_may_be_saved_but_not_used(folder):
    assert GoogleProvider.clean_config({"credentials_file": "later.json", "subject": SUBJECT})["credentials_file"] == "later.json"
    with pytest.raises(ConfigError, match=r"^credentials_file: later.json cannot be read \(No such file or directory\)$"):
        GoogleProvider({"credentials_file": "later.json", "subject": SUBJECT})


def test_a_file_that_became_a_symlink_since_its_path_was_resolved_is_not_followed(folder, monkeypatch):
    """The checks are made on the file opened: a swap between resolving and opening is refused."""
    from syncapp.providers import credentials

    target = key_file(folder / "acme.json")
    swapped = folder / "swapped.json"
    swapped.symlink_to(folder.parent / "other-tenant" / "key.json")
    monkeypatch.setattr(credentials, "confined_path", lambda value, key: swapped)
    with pytest.raises(ConfigError, match=r"cannot be read \(Too many levels of symbolic links\)"):
        read_credentials_file("acme.json", "credentials_file")
    assert target.exists()


def test_a_key_in_the_folder_is_used_by_a_relative_or_absolute_name_and_through_a_symlink_within(fake_google, folder):
    key = fake_google.service_account_file(folder)
    (folder / "acme.json").symlink_to(key.name)  # a symlink inside the folder, to a file inside it
    fake_google.load([{"id": "1", "primaryEmail": "a@example.org"}], {})
    for name in (key.name, str(key), "acme.json"):
        provider = GoogleProvider({"base_url": fake_google.url, "credentials_file": name, "subject": SUBJECT})
        assert [len(page.records) for page in provider.user_pages()] == [1]
    assert len(fake_google.assertions) == 3



@pytest.mark.django_db
def test_a_tenant_whose_key_would_be_refused_is_named_at_start_up(folder):
    from django.core.checks import run_checks

    from syncapp.models import Tenant

    key_file(folder / "good.json")
    for slug, name in (("good", "good.json"), ("old", "/etc/ballast/google-sa.json")):
        Tenant.objects.bulk_create([Tenant(slug=slug, name=slug, provider="google", provider_config={"credentials_file": name, "subject": SUBJECT})])
    [warning] = [m for m in run_checks() if m.id == "syncapp.W002"]
    assert warning.msg == ("the key files of these tenants will be refused: old (credentials_file: /etc/ballast/google-sa.json "
                           f"is outside PROVIDER_CREDENTIALS_DIR ({folder}); put the file there)")
