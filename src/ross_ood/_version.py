"""The package version (its one home: the package root and the results documents read it)."""
__version__ = "0.1.0"
