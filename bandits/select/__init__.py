"""`multisample select`: a dueling bandit picks, online, the best of several candidates.

`config` holds what a run is given, `traps` what it warns about before engines start,
`arbiters` who prefers one answer to the other, `state` the run's files and the round that
commits them, `adapt` the candidates' online adaptation, `loop` the rounds themselves.
"""
