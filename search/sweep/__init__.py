"""`sweep`: methods x budgets x seeds over one prompts file, quality against compute.

`config` holds the config and its cells, `run` the searches of every cell over one pool,
`evaluation` the separate evaluation reward's scores, `outputs` the tables and summary
made from the cells on disk, `report` their statistics, plots and markdown report.
"""
