"""The Python face of the jobs (multisample.jobs), which `import multisample` exposes: `runs`
(synthesize, sweep, select and their `_sync` twins), `pool` (a `Pool` started once and
shared by runs), `configs` (configs from a file, a dict or a model, with overrides),
`loop` (the library's own event loop, which notebooks need)."""
