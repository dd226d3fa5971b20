"""File names of a checkpoint folder that processes without torch read too (the worker's main
process, which copies checkpoints to and from the object store)."""

TRAINER_STATE_NAME = "trainer_state.json"
