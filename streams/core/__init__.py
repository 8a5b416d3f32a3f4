"""costplane component package."""
