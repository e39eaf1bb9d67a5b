"""The jobs every face runs (the command line, the Python API, the gateway), each
defined once: `registry` lists the jobs that make a run directory (synthesize, sweep,
select) with their config, traps, run coroutine and result; `targets` chooses and checks
where a run goes and undoes a start that failed; `inputs` keeps prompts given in memory
as the run's own file; `results` reads a finished run back; `train` and `export` work on
a finished synthesize run.
"""
