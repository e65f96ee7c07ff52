"""DIP grouping (按病种分值付费): case keys → catalogue match (numba), the auxiliary catalogue."""
