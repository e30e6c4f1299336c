"""Making the generations: one generation's state and its model call (`generation`), the event
loop that runs them (`executor`), provider batch jobs, what a run consists of (`run_plan`),
cost estimates, the `luigi` command's checks and `daydream run` / `status`. The Luigi tasks
themselves are `pipeline.tasks`, which the `luigi` command imports by name."""
