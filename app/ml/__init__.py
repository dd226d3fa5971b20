"""CLIP plumbing shared by training and serving."""

from transformers.utils import logging as transformers_logging

# Service logs are read line by line; transformers' per-shard progress bars only add noise.
transformers_logging.disable_progress_bar()
