"""The job's worker group on Ray: placement group, one actor per rank."""
