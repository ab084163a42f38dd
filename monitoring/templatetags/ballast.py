from django import template

from monitoring.ledger.allocations import amount_of
from monitoring.ledger.owners import owner_link

register = template.Library()

# {{ event.owner|owner_link }}: a run's owner as a link to the run.
register.filter("owner_link", owner_link)


@register.filter
def slots(allocation) -> str:
    """{{ allocation|slots }}: "1 run slot", as the admin and the messages name it."""
    return amount_of(allocation.amount, allocation.resource)
