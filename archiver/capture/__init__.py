"""Capture: the stages a URL goes through (record, seal, store, commit) and the fetchers
that record it (page, browser, media)."""
