"""Turning downloaded Brightspace extracts into database rows, streamed and transactional."""
