"""The HTTP plumbing every route shares: dependencies, body reading, multipart parts, errors."""
