"""Named scenarios, the run configuration, and the runner that ties workload, simulator and
metrics together. The CLI is a thin layer over :func:`mfsched.experiments.runner.run`."""
