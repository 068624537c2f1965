"""A folder of cases: start-up, configuration, workers and their pools, claims and the run's record."""
