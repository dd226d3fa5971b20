"""CLIP plumbing shared by training and serving."""
