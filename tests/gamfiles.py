"""Directory exports as GAM writes them (`gam print users`, `gam all users print tokens`) and as
JSON lines, made from an organisation in the Directory API's shape (tests.conftest.demo_org)."""

import csv
import gzip
import json
from pathlib import Path

USER_COLUMNS = ["primaryEmail", "id", "name.givenName", "name.familyName", "name.fullName", "isAdmin", "suspended",
                "orgUnitPath", "creationTime", "lastLoginTime", "isEnrolledIn2Sv"]  # GAM writes more than Ballast reads
TOKEN_COLUMNS = ["user", "clientId", "displayText", "anonymous", "nativeApp", "scopes", "userKey"]


def _flag(value) -> str:
    return "True" if value else "False"


def _login(moment: str | None) -> str:
    """GAM writes "Never" where the API says 1970-01-01T00:00:00.000Z."""
    return "Never" if not moment or moment.startswith("1970-01-01") else moment


def gam_user_rows(users: list[dict]):
    for user in users:
        full = user.get("name", {}).get("fullName", "")
        yield {"primaryEmail": user["primaryEmail"], "id": user["id"], "name.givenName": full.split(" ")[0],
               "name.familyName": full.split(" ")[-1], "name.fullName": full, "isAdmin": _flag(user.get("isAdmin")),
               "suspended": _flag(user.get("suspended")), "orgUnitPath": user.get("orgUnitPath", "/"),
               "creationTime": user.get("creationTime") or "", "lastLoginTime": _login(user.get("lastLoginTime")),
               "isEnrolledIn2Sv": "False"}


def gam_token_rows(users: list[dict], tokens: dict[str, list[dict]]):
    emails = {u["id"]: u["primaryEmail"] for u in users}
    for user_id, granted in tokens.items():
        for token in granted:
            yield {"user": emails[user_id], "clientId": token["clientId"], "displayText": token.get("displayText", ""),
                   "anonymous": _flag(token.get("anonymous")), "nativeApp": _flag(token.get("nativeApp")),
                   "scopes": " ".join(token.get("scopes", [])), "userKey": user_id}


def write_csv(path: Path, columns: list[str], rows) -> Path:
    """A CSV file (gzip when the name ends .gz), written a row at a time."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path


def export(folder: Path, users: list[dict], tokens: dict[str, list[dict]], *, format: str = "csv", gz: bool = False) -> tuple[Path, Path]:
    """The organisation as a users file and a tokens file in folder."""
    ext = (".csv" if format == "csv" else ".jsonl") + (".gz" if gz else "")
    if format == "csv":
        return (write_csv(folder / f"users{ext}", USER_COLUMNS, gam_user_rows(users)),
                write_csv(folder / f"tokens{ext}", TOKEN_COLUMNS, gam_token_rows(users, tokens)))
    return (write_jsonl(folder / f"users{ext}", users),
            write_jsonl(folder / f"tokens{ext}", ({**t, "userKey": uid} for uid, ts in tokens.items() for t in ts)))
