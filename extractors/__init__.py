"""muscat's built-in extractors: one module each, found by catalog/registry.py.

Each module starts with its `EXTRACTOR = Extractor(...)` declaration (name, version, device,
parameters, outputs with units) and defines `extract(audio, params)`. See catalog/extractor.py.
"""
