"""The job queue: a table that workers claim rows from; kinds are registered by dotted path."""
