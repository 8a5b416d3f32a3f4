"""The `costplane` command line."""
