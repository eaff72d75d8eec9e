"""brain-jobs: the plugin's Python package (importable as ``scripts`` from the plugin root)."""
