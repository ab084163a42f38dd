"""The steps a run may take, one entry each. Runs, forms, the API, progress, the admin, the
governor's routes and the metrics all read them here, so a new step is one entry.

Imports nothing of Ballast: models read the names for their choices.
"""

from dataclasses import dataclass, field

from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Step:
    name: str
    does: str  # in a few words, for help texts
    unit: str  # what its progress counts
    carry_out: str  # dotted path of the function that does it, given a StepContext
    governor: dict = field(default_factory=dict)  # its governor route's defaults (monitoring.governor.policy.RoutePolicy fields)
    needs: tuple[str, ...] = ()  # steps whose rows it reads: it waits for them, and is skipped when one did not complete
    follows: tuple[str, ...] = ()  # steps it comes after, unless the run is parallel: then it runs beside them
    alone: str = ""  # why no other step may share its run ("": any may)
    full_sync: bool = True  # part of a run that names no step
    reads_provider: bool = True  # relations reads only what tokens wrote
    io_bound: bool = False  # its pace is the provider's answers: calls in flight climb as they allow
    listed_unit: str = ""  # what progress counts where the source lists every record at once
    provider_feature: str = ""  # the provider class's flag it needs ("": every provider has it)
    unsupported: str = ""  # why a provider without that flag has no such step
    offered: bool = True  # a person may ask for it by name (revoke: only an approved revocation starts it)
    timeline_via: str = "sync"  # how the grant timeline names the changes it writes (GrantEvent.Via)

    def function(self):
        return import_string(self.carry_out)

    def supported_by(self, provider_class) -> bool:
        return not self.provider_feature or bool(getattr(provider_class, self.provider_feature))


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "users", "the directory's users", unit="users", carry_out="syncapp.steps.users.sync_users",
            governor={"max_concurrency": 3, "io_max_concurrency": 3, "sequential_above": 75.0, "brake_after": 5},
        ),
        Step(
            "tokens", "each user's OAuth grants", unit="users asked", carry_out="syncapp.steps.execute.sync_grants",
            governor={"max_concurrency": 2, "io_max_concurrency": 32, "sequential_above": 70.0, "brake_after": 3},
            follows=("users",), io_bound=True, listed_unit="token records (read, then written)",
        ),
        Step(
            "relations", "who uses which application, from the tokens", unit="tokens", carry_out="syncapp.steps.relations.sync_relations",
            governor={"max_concurrency": 2, "io_max_concurrency": 2, "sequential_above": 70.0, "brake_after": 4},
            needs=("tokens",), reads_provider=False,
        ),
        Step(
            "changes", "the feed of grants and revocations since the last sync", unit="events", carry_out="syncapp.steps.execute.apply_changes",
            governor={"max_concurrency": 1, "io_max_concurrency": 1, "sequential_above": 70.0, "brake_after": 4},  # one feed, read in order
            alone="it applies the feed of grants and revocations to tokens and relations itself",
            full_sync=False, provider_feature="has_changes_feed", unsupported="no feed of token changes: full syncs keep its tokens",
            timeline_via="changes",
        ),
        Step(
            "revoke", "the grants an approved revocation names, revoked at the provider, then checked gone", unit="grants",
            carry_out="syncapp.steps.revoke.revoke_grants",
            governor={"max_concurrency": 2, "io_max_concurrency": 16, "sequential_above": 70.0, "brake_after": 3},
            alone="it carries out one approved revocation", full_sync=False, io_bound=True, offered=False,
            provider_feature="revocable", unsupported="its grants cannot be revoked from Ballast", timeline_via="revoke",
        ),
    )
}
STEP_NAMES = tuple(STEPS)
CHANGES = "changes"  # the step a tenant's changes schedule starts
REVOKE = "revoke"  # the step an approved revocation's run takes
FULL_SYNC = tuple(name for name, step in STEPS.items() if step.full_sync)  # what a run does when no step is named


def supported_steps(provider_class) -> list[str]:
    """The steps a person may ask a run of this provider to take."""
    return [name for name, step in STEPS.items() if step.offered and step.supported_by(provider_class)]


def offered_steps() -> list[str]:
    """The steps a person may ask for by name, whatever the provider."""
    return [name for name, step in STEPS.items() if step.offered]
