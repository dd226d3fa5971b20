"""Data parallel training: one run as several processes, one per device, started by torch's own
launcher (`launch.py`); `ranks.py` is what the run asks of the group, `sharding.py` each rank's
share of a global batch, `gather.py` the contrastive loss over the global batch."""
