"""StorageService: objects in a local folder or an S3/MinIO-compatible bucket, streamed in chunks."""
