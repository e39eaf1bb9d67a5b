"""`multisample serve`: an OpenAI-compatible gateway where pool models, strategies
(routes) and bandits that select and adapt models online (selection routes) answer live
traffic, and the traffic becomes a run directory."""
