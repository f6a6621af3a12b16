"""The copy engine: S3 adapter, streaming copier, concurrency limiter, shard runner, CLI."""
