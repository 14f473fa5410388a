"""Small shared helpers: atomic file writes, torch.distributed wrappers, progress bars."""
