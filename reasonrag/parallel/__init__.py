"""Many questions at once: a thread pool (`--concurrency`) and a Ray actor pool (`--ray`)."""
