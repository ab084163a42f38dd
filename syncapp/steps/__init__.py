"""The three sync steps (users ∥ tokens, then relations) and what executes them. A step reads
pages, validates records, and writes them in batches, each committed with its counters and
checkpoint (context.StepContext.commit)."""

from .execute import STEPS, execute_step

__all__ = ["STEPS", "execute_step"]
