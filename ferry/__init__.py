"""Ferry: bulk S3-to-S3 copy jobs."""
