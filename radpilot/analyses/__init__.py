"""Analyses: pure functions from input series (Volumes) to typed findings; one folder each."""
