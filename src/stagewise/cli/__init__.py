"""The `stagewise` command line: thin commands over the Python API."""
