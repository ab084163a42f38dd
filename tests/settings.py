"""Test settings: the project's settings, with a queue and cache of the tests' own."""

import os

# The tests' own key and plain HTTP (the test client's requests are not HTTPS), whatever the
# clone's .env holds: tests never depend on it. Variables set in the environment still win.
for _name, _value in {
    "SECRET_KEY": "ballast-tests-only-key-never-used-to-sign-anything-real-0123456789",
    "SECURE_SSL_REDIRECT": "false", "SECURE_HSTS_SECONDS": "0", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
}.items():
    os.environ.setdefault(_name, _value)

from project.settings import *  # noqa: E402, F403
from project.settings import BASE_DIR, DATABASES, Q_CLUSTER  # noqa: E402

# A name of its own keeps test tasks out of a developer's running cluster.
Q_CLUSTER = {**Q_CLUSTER, "name": "ballast-test", "poll": 0.1}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory: a qcluster process started by a test must reach it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": "test_ballast"}

# A quiet machine for every test: the governor's decisions must not depend on the load of the
# machine running the suite (tests of the real readers build them themselves).
BALLAST_READER = "monitoring.governor.readings.fake.CalmReader"
