"""One contract, every writer: the same tests run against the portable ORM writer and, on
PostgreSQL, the COPY writer (as Django's session backends share SessionTestsMixin)."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Value
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from syncapp.models import DirectoryUser, StagedToken, Token, UserAppRelation
from syncapp.writers import OrmWriter, PostgresCopyWriter
from syncapp.writers.base import Outcome

from ...factories import ApplicationFactory, DirectoryUserFactory, TenantFactory

TABLES = ("syncapp_directoryuser", "syncapp_application", "syncapp_token", "syncapp_userapprelation")
USER_FIELDS = ("primary_email", "full_name", "is_suspended", "last_login_at")


def user(n: int, **changes) -> dict:
    return {"external_id": f"u{n}", "primary_email": f"user{n}@example.org", "full_name": f"User {n}",
            "is_suspended": False, "last_login_at": None, **changes}


@pytest.mark.django_db
class WriterContract:
    writer = None

    def write_users(self, tenant, rows, now, **kwargs) -> Outcome:
        return self.writer.write(DirectoryUser, tenant_id=tenant.pk, rows=rows, key=("external_id",), compare=USER_FIELDS, now=now, **kwargs)

    def test_new_rows_are_created_and_stamped(self):
        tenant, now = TenantFactory(), timezone.now()
        assert self.write_users(tenant, [user(1), user(2)], now) == Outcome(created=2)
        stored = DirectoryUser.objects.get(tenant=tenant, external_id="u2")
        assert (stored.full_name, stored.first_seen, stored.last_seen) == ("User 2", now, now)

    def test_changed_rows_are_updated_and_unchanged_ones_only_stamped(self):
        tenant, then = TenantFactory(), timezone.now() - timedelta(hours=1)
        self.write_users(tenant, [user(1), user(2), user(3)], then)
        now = timezone.now()
        outcome = self.write_users(tenant, [user(1), user(2, full_name="Renamed"), user(3, is_suspended=True)], now)
        assert outcome == Outcome(updated=2, unchanged=1)
        rows = {u.external_id: u for u in DirectoryUser.objects.filter(tenant=tenant)}
        assert rows["u2"].full_name == "Renamed" and rows["u3"].is_suspended
        assert all(u.first_seen == then and u.last_seen == now for u in rows.values())  # every row seen now

    def test_a_second_write_of_the_same_rows_changes_nothing_but_the_stamp(self):
        tenant, then = TenantFactory(), timezone.now() - timedelta(hours=1)
        self.write_users(tenant, [user(n) for n in range(5)], then)
        assert self.write_users(tenant, [user(n) for n in range(5)], timezone.now()) == Outcome(unchanged=5)

    def test_fields_left_out_keep_what_is_stored_and_no_fields_at_all_only_stamps(self):
        """A source that gives only some fields (a file without a column) compares and writes those."""
        tenant, then = TenantFactory(), timezone.now() - timedelta(hours=1)
        self.write_users(tenant, [user(1, full_name="Ada"), user(2)], then)
        now = timezone.now()
        emails_only = [{"external_id": "u1", "primary_email": "new@example.org"}, {"external_id": "u2", "primary_email": "user2@example.org"}]
        outcome = self.writer.write(DirectoryUser, tenant_id=tenant.pk, rows=emails_only, key=("external_id",), compare=("primary_email",), now=now)
        assert outcome == Outcome(updated=1, unchanged=1)
        first = DirectoryUser.objects.get(tenant=tenant, external_id="u1")
        assert (first.primary_email, first.full_name, first.last_seen) == ("new@example.org", "Ada", now)
        keys_only = [{"external_id": "u1"}, {"external_id": "u3"}]
        later = timezone.now()
        outcome = self.writer.write(DirectoryUser, tenant_id=tenant.pk, rows=keys_only, key=("external_id",), compare=(), now=later)
        assert outcome == Outcome(created=1, unchanged=1)
        assert DirectoryUser.objects.get(tenant=tenant, external_id="u1").last_seen == later
        assert DirectoryUser.objects.get(tenant=tenant, external_id="u1").primary_email == "new@example.org"

    def test_a_key_twice_in_one_batch_counts_once_and_the_last_wins(self):
        tenant = TenantFactory()
        assert self.write_users(tenant, [user(1), user(1, full_name="Later")], timezone.now()) == Outcome(created=1)
        assert DirectoryUser.objects.get(tenant=tenant).full_name == "Later"

    def test_a_placeholder_another_step_made_counts_as_created(self):
        tenant = TenantFactory()
        DirectoryUserFactory(tenant=tenant, external_id="u1", primary_email="user1@example.org", last_seen=None)
        DirectoryUserFactory(tenant=tenant, external_id="u2", primary_email="user2@example.org", full_name="User 2",
                             is_suspended=False, last_login_at=None, last_seen=None)  # same fields: still new
        DirectoryUserFactory(tenant=tenant, external_id="u3", **{k: v for k, v in user(3).items() if k != "external_id"})
        outcome = self.write_users(tenant, [user(1), user(2), user(3)], timezone.now(), new_if_null="last_seen")
        assert outcome == Outcome(created=2, unchanged=1)
        assert not DirectoryUser.objects.filter(tenant=tenant, last_seen__isnull=True).exists()

    def test_other_tenants_rows_are_never_touched(self):
        mine, other, then = TenantFactory(), TenantFactory(), timezone.now() - timedelta(hours=1)
        self.write_users(other, [user(1)], then)
        assert self.write_users(mine, [user(1, full_name="Mine")], timezone.now()) == Outcome(created=1)
        theirs = DirectoryUser.objects.get(tenant=other)
        assert (theirs.full_name, theirs.last_seen) == ("User 1", then)

    def test_composite_keys_and_json_fields(self):
        tenant, then = TenantFactory(), timezone.now() - timedelta(hours=1)
        users = [DirectoryUserFactory(tenant=tenant) for _ in range(3)]
        apps = [ApplicationFactory(tenant=tenant) for _ in range(3)]

        def tokens(scopes_of_first):
            return [
                {"user_id": u.pk, "application_id": a.pk, "scopes": scopes_of_first if (u, a) == (users[0], apps[0]) else ["openid"],
                 "anonymous": False, "native_app": False, "revoked_at": None}
                for u in users for a in apps[:2]
            ]

        def write(rows, now):
            return self.writer.write(Token, tenant_id=tenant.pk, rows=rows, key=("user_id", "application_id"),
                                     compare=("scopes", "anonymous", "native_app", "revoked_at"), now=now)

        assert write(tokens(["openid"]), then) == Outcome(created=6)
        assert write(tokens(["openid", "email"]), timezone.now()) == Outcome(updated=1, unchanged=5)
        assert Token.objects.get(tenant=tenant, user=users[0], application=apps[0]).scopes == ["openid", "email"]
        assert Token.objects.filter(tenant=tenant).count() == 6

    def test_rows_a_query_yields_are_written_by_the_same_contract(self):
        tenant, then = TenantFactory(), timezone.now() - timedelta(hours=1)
        users, apps = [DirectoryUserFactory(tenant=tenant) for _ in range(2)], [ApplicationFactory(tenant=tenant) for _ in range(2)]
        for u in users:
            for a in apps:
                Token.objects.create(tenant=tenant, user=u, application=a, scopes=["openid"], first_seen=then, last_seen=then)

        def write(now, source=None):
            source = Token.objects.filter(tenant=tenant) if source is None else source
            return self.writer.write_query(UserAppRelation, tenant_id=tenant.pk, source=source.annotate(active=Value(True)),
                                           key=("user_id", "application_id"), compare=("scopes", "active"), now=now)

        assert write(then) == Outcome(created=4)
        Token.objects.filter(tenant=tenant, user=users[0], application=apps[0]).update(scopes=["openid", "email"])
        now = timezone.now()
        assert write(now) == Outcome(updated=1, unchanged=3)
        relations = {(r.user_id, r.application_id): r for r in UserAppRelation.objects.filter(tenant=tenant)}
        assert relations[(users[0].pk, apps[0].pk)].scopes == ["openid", "email"]
        assert all(r.active and r.first_seen == then and r.last_seen == now for r in relations.values())
        assert write(now, Token.objects.none()) == Outcome()

    def test_an_empty_batch_writes_nothing(self):
        assert self.write_users(TenantFactory(), [], timezone.now()) == Outcome()

    def test_appended_rows_are_inserted_as_given_json_included(self):
        tenant = TenantFactory()
        rows = [{"tenant_id": tenant.pk, "stage": 7, "pair": f"u{n}\x1fapp", "user_key": f"u{n}", "email": "", "client_id": "app",
                 "display_name": "Ünïcode App", "native_app": n % 2 == 0, "anonymous": False, "scopes": ["openid", f"s{n}"]}
                for n in range(3)]
        with transaction.atomic():
            self.writer.append(StagedToken, rows)
            self.writer.append(StagedToken, rows[:1])  # no key: the same row again is another row
            self.writer.append(StagedToken, [])
        stored = list(StagedToken.objects.order_by("id").values(*rows[0]))
        assert stored == rows + rows[:1]


class TestOrmWriter(WriterContract):
    writer = OrmWriter()


class TestPostgresCopyWriter(WriterContract):
    writer = PostgresCopyWriter()

    @pytest.fixture(autouse=True)
    def postgresql_only(self):
        if connection.vendor != "postgresql":
            pytest.skip("COPY is PostgreSQL's")

    def test_a_growing_table_is_analysed_at_1000_rows_then_at_each_doubling_then_every_20000(self, monkeypatch):
        from syncapp.writers import postgresql

        monkeypatch.setattr(postgresql, "_created_since_analyze", {})
        monkeypatch.setattr(postgresql, "_created_by_last_analyze", {})
        analysed_at, total = [], 0
        for _ in range(110):
            with CaptureQueriesContext(connection) as queries:
                self.writer.inserted("syncapp_directoryuser", 500)
            total += 500
            if any(q["sql"].startswith("ANALYZE") for q in queries.captured_queries):
                analysed_at.append(total)
        assert analysed_at == [1000, 2000, 4000, 8000, 16000, 32000, 52000]

    def test_the_directory_tables_leave_room_on_each_page_for_the_stamp(self):
        """So that stamping last_seen is a heap-only update that writes no index (migration 0004)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [list(TABLES)])
            assert dict(cursor.fetchall()) == {table: ["fillfactor=70"] for table in TABLES}

    @pytest.mark.django_db(transaction=True)
    def test_a_stage_is_made_once_per_connection_and_trusted_empty_only_after_a_commit(self):
        tenant = TenantFactory()
        statements = []

        def write(rows):
            with CaptureQueriesContext(connection) as queries, transaction.atomic():
                outcome = self.write_users(tenant, rows, timezone.now())
            statements.append([q["sql"].split()[0] for q in queries.captured_queries if q["sql"].startswith(("CREATE", "DELETE"))])
            return outcome

        assert write([user(1), user(2)]) == Outcome(created=2)
        assert write([user(2), user(3)]) == Outcome(created=1, unchanged=1)
        assert statements[:2] == [["CREATE", "DELETE"], []]
        with pytest.raises(RuntimeError), transaction.atomic():  # a rollback may take a new stage with it
            self.write_users(tenant, [user(4)], timezone.now())
            raise RuntimeError
        assert write([user(4)]) == Outcome(created=1)
        assert statements[2] == ["CREATE", "DELETE"]


def test_json_dumps_remembers_lists_of_text_and_only_those():
    from syncapp.writers.postgresql import _dumped_texts, _dumps

    _dumped_texts.cache_clear()
    assert [_dumps(["openid", "email"]) for _ in range(3)] == ['["openid", "email"]'] * 3
    assert _dumped_texts.cache_info().hits == 2
    assert (_dumps([1]), _dumps([True]), _dumps({"a": [1]})) == ("[1]", "[true]", '{"a": [1]}')  # 1 == True as keys
    assert _dumped_texts.cache_info().currsize == 1
