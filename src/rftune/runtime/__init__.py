"""Where a run computes and what it leaves behind: device, processes (torchrun), sharding, the run-directory
lock, atomic file writes, metric trackers. The plumbing every layer above may use; it knows no model or task."""
