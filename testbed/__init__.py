"""Ferry's own testbed: S3 server processes, a fault-injecting proxy, and a local control plane."""
