"""Artefacts by key behind one interface (`ObjectStore`): a local folder or an S3 bucket."""
