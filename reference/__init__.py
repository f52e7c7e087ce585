"""Published results that tests and benchmarks reproduce; not part of the installed app."""
