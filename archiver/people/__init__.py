"""People and access: accounts, per-case roles, API tokens, and the rule that decides
who may do what (:mod:`archiver.people.access`)."""
