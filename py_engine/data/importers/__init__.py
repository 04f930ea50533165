"""Importers: web pages, images and text files made into training records (py_engine.data.record),
each record saying where it came from (its origin). Pure Python: they run in the browser too."""
