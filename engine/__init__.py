"""ccsync's domain and core: events, the log, policy, the reconciler, the sync cycle."""
