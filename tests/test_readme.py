"""The README's commands work as written: every `sh` block runs, in order, on a fresh database,
unless the line before it says `<!-- not run: why -->` (a server, systemd, a real Workspace)."""

import re
import shlex
import subprocess
import sys

from .conftest import ROOT, child_env

BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]*?) -->\n)?```sh\n(?P<body>.*?)```", re.S)


def readme_blocks() -> list[tuple[str | None, list[str]]]:
    """(why it is not run, or None; its commands, continuation lines joined) per sh block."""
    blocks = []
    for match in BLOCK.finditer((ROOT / "README.md").read_text()):
        commands = [c.strip() for c in match["body"].replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]
        blocks.append((match["why"], commands))
    return blocks


def test_every_sh_block_runs_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 5
    assert all(why is None or why.strip() for why, _ in blocks)
    assert sum(why is None for why, _ in blocks) >= 1


def test_the_readmes_commands_run_on_a_fresh_database(tmp_path):
    env = child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'readme.sqlite3'}", STATIC_ROOT=str(tmp_path / "static"))
    env.pop("REDIS_URL", None)  # the README's own defaults: SQLite and the ORM broker
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)  # what `make demo` did first
    ran = []
    for why, commands in readme_blocks():
        if why is not None:
            continue
        for command in commands:
            words = shlex.split(command)
            if words[0] == ".venv/bin/python":
                words[0] = sys.executable
            done = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran.append((command, done.stdout))
    said = dict(ran)
    assert "The connection works" in said[".venv/bin/python manage.py tenant test acme"]
    assert re.search(r"Run #\d+ Completed in", said[".venv/bin/python manage.py sync acme --wait"])
    assert "users: active 200" in said[".venv/bin/python manage.py tenant show acme"]
    imported = said[".venv/bin/python manage.py import acme-gam --users docs/examples/users.csv --tokens docs/examples/tokens.csv --wait"]
    assert re.search(r"Run #\d+ Completed in", imported)
