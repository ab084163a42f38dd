"""Directory exports as GAM writes them (`gam print users fields …`, `gam all users_ns_susp print tokens`) and as
JSON lines, made from an organisation in the Directory API's shape (tests.conftest.demo_org)."""

import csv
import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

# What `gam print users fields id,primaryemail,name,isadmin,isdelegatedadmin,suspended,archived,
# orgunitpath,creationtime,lastlogintime` writes: primaryEmail first, then the other titles sorted,
# `name` flattened into its three subfields (GAM writes more than Ballast reads).
USER_COLUMNS = ["primaryEmail", "archived", "creationTime", "id", "isAdmin", "isDelegatedAdmin", "lastLoginTime",
                "name.familyName", "name.fullName", "name.givenName", "orgUnitPath", "suspended"]
# `gam all users_ns_susp print tokens`: GAM's own order (gam/__init__.py, printShowTokens).
TOKEN_COLUMNS = ["user", "clientId", "displayText", "anonymous", "nativeApp", "userKey", "scopes"]
# GAM's CSV dialect (gam/util/csv_pf.py): minimal quoting, quotes doubled, a backslash escaped, "\n" lines.
GAM_DIALECT = {"escapechar": "\\", "doublequote": True, "lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}
GAM_TIME_ZONE = timezone(timedelta(hours=2))  # GAM writes times in its configured zone, with the offset


def _flag(value) -> str:
    return "True" if value else "False"


def _local(moment: str | None) -> str:
    """GAM's formatLocalTime: "Never" where the API says 1970-01-01T00:00:00.000Z, else the time
    in GAM's zone to the second, with its offset."""
    if not moment or moment.startswith("1970-01-01"):
        return "Never"
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(GAM_TIME_ZONE).isoformat(timespec="seconds")


def gam_user_rows(users: list[dict]):
    for user in users:
        full = user.get("name", {}).get("fullName", "")
        yield {"primaryEmail": user["primaryEmail"], "archived": _flag(user.get("archived")), "creationTime": _local(user.get("creationTime")),
               "id": user["id"], "isAdmin": _flag(user.get("isAdmin")), "isDelegatedAdmin": _flag(user.get("isDelegatedAdmin")),
               "lastLoginTime": _local(user.get("lastLoginTime")), "name.familyName": full.split(" ")[-1], "name.fullName": full,
               "name.givenName": full.split(" ")[0], "orgUnitPath": user.get("orgUnitPath", "/"), "suspended": _flag(user.get("suspended"))}


def gam_token_rows(users: list[dict], tokens: dict[str, list[dict]]):
    emails = {u["id"]: u["primaryEmail"] for u in users}
    for user_id, granted in tokens.items():
        for token in granted:
            yield {"user": emails[user_id], "clientId": token["clientId"], "displayText": token.get("displayText", ""),
                   "anonymous": _flag(token.get("anonymous")), "nativeApp": _flag(token.get("nativeApp")),
                   "userKey": user_id, "scopes": " ".join(token.get("scopes", []))}


def write_csv(path: Path, columns: list[str], rows) -> Path:
    """A CSV file in GAM's dialect (gzip when the name ends .gz), written a row at a time."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, columns, **GAM_DIALECT)
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
