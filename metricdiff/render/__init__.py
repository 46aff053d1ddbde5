"""Renderers: report dicts as terminal tables, markdown or JSON. They only read; never compute."""
