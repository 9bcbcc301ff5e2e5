"""Watching: sources that list posts, the poller and scheduler, the job queue and its
workers, revisits that record takedowns, and the daemon that runs them."""
