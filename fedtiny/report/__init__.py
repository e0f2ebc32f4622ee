"""Results and reports."""
