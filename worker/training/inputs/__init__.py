"""What a run feeds on: prepared images, batches and their transforms, the task, the control set."""
