"""`synthesize`: a strategy over a prompts file, into a run directory that is a dataset.

`config` holds the config, `records` what the run directory holds (its files and their
records, the summary), `card` its dataset card, `job` the searches of one run directory
(a synthesize run is one, each cell of a sweep another), `run` the job itself.
"""
