# The grant timeline's trigger on PostgreSQL: inserts per statement instead of per row, read from
# the statement's transition table in one INSERT … SELECT, so a batch of 3,000 new tokens costs
# one set-based statement, not 3,000 calls of a procedure (with 0011's row trigger a first sync's
# tokens step took 2.2× as long at 10,000 users). SQLite keeps its row triggers.

from django.db import migrations

INSERTED = """
CREATE FUNCTION ballast_grants_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    seen text := coalesce(current_setting('ballast.seen_by', true), '');
BEGIN
    INSERT INTO syncapp_grantevent (tenant_id, token_id, user_id, application_id, kind, at, scopes, added, removed, run_id, via)
    SELECT tenant_id, id, user_id, application_id, 'granted', last_seen, scopes, scopes, '[]',
           nullif(split_part(seen, ':', 1), '')::bigint, split_part(seen, ':', 2)
    FROM inserted WHERE revoked_at IS NULL;
    UPDATE syncapp_application SET risk_stale = true
    WHERE NOT risk_stale AND id IN (SELECT application_id FROM inserted WHERE revoked_at IS NULL);
    RETURN NULL;
END
$$;
CREATE TRIGGER ballast_grants_inserted AFTER INSERT ON syncapp_token
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ballast_grants_inserted();
"""

# Updates stay per row, for the rows whose scopes or revocation changed (the WHEN clause is
# checked before any procedure runs): a sync's updates are mostly stamps of last_seen, and a
# statement trigger joined the before and after of every one (it made a first sync's tokens step
# two and a half times slower).
CHANGED = """
CREATE TRIGGER ballast_grant_changed AFTER UPDATE OF scopes, revoked_at ON syncapp_token
    FOR EACH ROW WHEN (OLD.scopes IS DISTINCT FROM NEW.scopes OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION ballast_grant_event();
"""

ROW_TRIGGER_DROP = "DROP TRIGGER IF EXISTS ballast_grant_event ON syncapp_token"  # its function serves CHANGED
NEW_TRIGGERS_DROP = (
    "DROP TRIGGER IF EXISTS ballast_grants_inserted ON syncapp_token; DROP FUNCTION IF EXISTS ballast_grants_inserted();"
    "DROP TRIGGER IF EXISTS ballast_grant_changed ON syncapp_token;"
)


def per_statement(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in (ROW_TRIGGER_DROP, INSERTED, CHANGED):
            schema_editor.execute(statement)


def per_row(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NEW_TRIGGERS_DROP)
        schema_editor.execute(
            "CREATE TRIGGER ballast_grant_event AFTER INSERT OR UPDATE OF scopes, revoked_at ON syncapp_token "
            "FOR EACH ROW EXECUTE FUNCTION ballast_grant_event()"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("syncapp", "0013_alerts"),
    ]

    operations = [migrations.RunPython(per_statement, per_row)]
