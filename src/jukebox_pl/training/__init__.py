"""Training plumbing shared by every stage: LR schedules, the Trainer factory, callbacks, checkpoints."""
