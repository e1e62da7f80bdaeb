"""Start-up cost of PySide6's import hook (imported first by radassist.gui).

Importing PySide6 installs an import hook for its opt-in ``from __feature__ import ...`` syntax: from
then on, every newly imported module has its source read (``inspect.getsource``) to see whether it
mentions PySide6. The app imports a few thousand modules after Qt (SQLAlchemy and Alembic before the
window shows, torch in the engine's thread), which costs a few hundred ms, all of it holding the
interpreter lock. Modules of the packages below never use Qt, so the hook is told so without reading
them; every other module (ours, pytest-qt, ...) is still checked by PySide6 itself.
"""
from __future__ import annotations

import sys

NOT_QT_PACKAGES = frozenset({
    "alembic", "sqlalchemy", "mako", "pygments", "markupsafe", "torch", "torchgen", "numpy", "safetensors",
    "tokenizers", "transformers", "huggingface_hub", "peft", "bitsandbytes", "accelerate", "gguf", "sympy",
    "mpmath", "networkx", "jinja2", "fsspec", "filelock", "argon2", "platformdirs", "yaml", "regex",
    "packaging", "tqdm", "requests", "urllib3", "certifi", "idna", "charset_normalizer", "typing_extensions",
})


def _skip_feature_scan_for_non_qt_packages() -> None:
    import PySide6  # noqa: F401  (installs the hook; every module of this package imports Qt anyway)

    feature = sys.modules.get("shibokensupport.feature")
    original = getattr(feature, "_mod_uses_pyside", None)
    if feature is None or original is None or getattr(original, "_radassist", False):
        return  # another PySide6 version: leave it as it is

    def mod_uses_pyside(module) -> bool:
        if getattr(module, "__name__", "").partition(".")[0] in NOT_QT_PACKAGES:
            return False
        return original(module)

    mod_uses_pyside._radassist = True  # type: ignore[attr-defined]
    feature._mod_uses_pyside = mod_uses_pyside


_skip_feature_scan_for_non_qt_packages()
