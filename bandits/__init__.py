"""Dueling and classic bandits: the policies, their formulas, the simulator, and `select`
(online model selection over a live pool, with online adaptation)."""
