"""The worker process: claims jobs from the job table and runs each in a spawned child process."""
