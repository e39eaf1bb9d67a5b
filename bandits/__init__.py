"""Dueling and classic bandits for online model selection (see issue: Co-UCB)."""
