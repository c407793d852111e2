"""Is it still right? Comparing outputs and scoring accuracy, for every stage, in one place."""
