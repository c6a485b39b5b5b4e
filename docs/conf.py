"""Sphinx configuration: the user guide (Markdown, MyST), the API reference from the docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (CI does, with
warnings as errors); needs ``pip install -e ".[docs]"``.
"""

from importlib.metadata import version as _version

project = "variational"
author = "variational contributors"
copyright = "variational contributors"
release = _version("variational")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True   # "Attributes" sections as fields: properties are documented once

myst_heading_anchors = 3
html_theme = "alabaster"
html_title = f"variational {release}"
