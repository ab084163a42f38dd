"""Django's psycopg pool is not fork-safe: a forked child must not reuse the parent's connections."""

import json
import subprocess
import sys

import pytest
from django.db import connection

from ..conftest import ROOT, child_env

# Parent opens the pool, forks, and both sides ask PostgreSQL which backend serves them.
SCRIPT = """
import json, os, django
django.setup()
from django.db import connection
def backend():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
parent_before = backend()
connection.close()  # back to the pool, as django-q2 does before it forks
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(backend()).encode()); os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"parent": parent_before, "child": int(os.read(read, 64)), "parent_after": backend()}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_opens_its_own_pool():
    if connection.vendor != "postgresql":
        pytest.skip("the psycopg pool exists on PostgreSQL only")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=child_env(DB_POOL="true", DB_POOL_MIN_SIZE="1"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    backends = json.loads(done.stdout.strip().splitlines()[-1])
    assert backends["child"] not in (backends["parent"], backends["parent_after"])  # not the parent's socket
    assert backends["parent_after"] > 0  # and the parent still talks to PostgreSQL
