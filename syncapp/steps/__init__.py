"""The sync steps (syncapp.step_registry names them: users ∥ tokens, then relations; changes
alone) and what executes them. A step reads pages, validates records, and writes them in
batches, each committed with its counters and checkpoint (context.StepContext.commit)."""
