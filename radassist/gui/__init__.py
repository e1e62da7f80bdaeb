"""The desktop app (PySide6). Only this package imports Qt.

Importing it first makes PySide6's import hook skip packages that never use Qt (see qt_import_hook).
"""
from radassist.gui import qt_import_hook  # noqa: F401
