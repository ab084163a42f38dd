"""Test settings: the project's settings, with a queue and cache of the tests' own."""

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, DATABASES, Q_CLUSTER

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
BALLAST_READER = "monitoring.readings.fake.CalmReader"
