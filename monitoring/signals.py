"""Moments other code can subscribe to (monitoring itself knows nobody's models)."""

from django.dispatch import Signal

# sender=Allocation, allocation=<the Allocation>: a waiter got its slot (after commit).
allocation_granted = Signal()
# sender=Allocation, allocation=<the Allocation>: its holder died; the slot went back (after commit).
allocation_reclaimed = Signal()
