"""Sphinx configuration: numpydoc API pages, the pydata theme, Markdown for the
benchmark tables, and figures drawn by figures.py at every build."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import figures  # noqa: E402

import fastconv  # noqa: E402

project = "fastconv"
author = "The fastconv developers"
copyright = "The fastconv developers"
release = version = fastconv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",  # the tables `fastconv bench --out *.md` writes
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# The benchmark tables are included by performance.md, not pages of their own.
exclude_patterns = ["_build", "performance/*.md"]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say it
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = "fastconv"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path = []

doctest_global_setup = "import numpy as np\nimport fastconv"

figures.draw_all(DOCS / "_generated")
