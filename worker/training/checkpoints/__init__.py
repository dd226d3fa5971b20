"""How a run persists: checkpoint folders, host snapshots, the background writer, resuming."""
