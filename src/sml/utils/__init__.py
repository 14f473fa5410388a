"""Small shared helpers below every other part of sml: atomic file writes, the run folder (its layout,
run.json, the lock), the console tables, torch.distributed wrappers, progress bars."""
