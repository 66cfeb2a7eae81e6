"""The book's local assets: MathJax served with the built book, so a reader offline sees the formulas, not raw
``\\(...\\)``. The copy comes from the ``django-static-mathjax`` package (MathJax 3, a dependency of the study);
``_config.yml`` points Sphinx's ``mathjax_path`` at it.

    python -m study.book mathjax _static/mathjax
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

BUNDLE = "tex-chtml.js"  # TeX in, CommonHTML out: what Sphinx's math needs
PARTS = ("input", "output", "ui", "a11y", "adaptors")  # what that bundle loads lazily (fonts, menu, extensions)


def mathjax_source() -> Path:
    """MathJax's ES5 build inside the installed package."""
    return Path(str(resources.files("mathjax") / "static" / "mathjax" / "es5"))


def copy_mathjax(dest: Path) -> Path:
    """Copy the bundle and the parts it loads into ``dest`` (replaced whole); the speech engine stays out (18 MB)."""
    source = mathjax_source()
    if not (source / BUNDLE).is_file():
        raise FileNotFoundError(
            f"MathJax not found at {source}: install the study's dependencies "
            "(pip install -e '.[study]', which brings django-static-mathjax)"
        )
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(source / BUNDLE, dest / BUNDLE)
    for part in PARTS:
        shutil.copytree(source / part, dest / part)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "mathjax":
        sys.exit("usage: python -m study.book mathjax DEST")
    print(f"MathJax copied to {copy_mathjax(Path(sys.argv[2]))}")
