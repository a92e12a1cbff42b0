import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

# One version: the package's own __version__ (bundled into every function, recorded on every model version).
VERSION = re.search(r'__version__ = "([^"]+)"', (Path(__file__).parent / "akerbp/mlops/__init__.py").read_text())[1]

setup(
    name="akerbp.mlops",
    version=VERSION,
    description="Ship ML models to Cognite Data Fusion: versioned artifacts, tested and verified CDF Functions, "
    "and an offline local CDF",
    packages=find_namespace_packages(include=["akerbp.*"]),
    include_package_data=True,
    # Data files, the model repo template (akerbp/mlops/templates/) among them: its .py files ship as modules.
    # The GitHub workflow template is named on its own: `**` does not enter hidden folders (.github).
    package_data={"akerbp.mlops": ["**/*.json", "**/*.yml", "**/*.yaml", "**/*.txt", "**/*.sh", "**/*.model",
                                   "**/*.in", "templates/model_repo/.github/workflows/*.yml",
                                   "ui/templates/*.html", "ui/static/*.js", "ui/static/*.css"]},
    python_requires=">=3.10",
    install_requires=[
        "cognite-sdk>=8.22,<9",
        "click>=8.1",
        "pyyaml>=6",
        "requests>=2.28",
        "pytest>=7",
        "werkzeug>=3.0",
        "croniter>=2.0",
        "jsonschema>=4.18",
        "numpy>=1.24",
        "pydantic>=2",
        "duckdb>=1.1",
        "jinja2>=3.1",  # mlops ui's pages
        "plotly>=5",  # mlops ui's charts: plotly.min.js served from the package, no CDN
    ],
    # test: what CI runs besides pytest (the pipeline schema check, the linter, the type checker, playwright driving the
    # system's chromium for tests/ui/test_browser.py: not selenium, whose trio makes every SDK import 0.17 s slower), and what
    # tests/cli/test_init.py builds a wheel with, offline (--no-build-isolation): setuptools and wheel.
    extras_require={"test": ["check-jsonschema>=0.28", "pytest-xdist>=3.5", "ruff>=0.6", "mypy>=1.10", "types-PyYAML", "types-jsonschema", "types-requests", "playwright>=1.45", "setuptools>=64", "wheel"]},
    entry_points={"console_scripts": ["mlops=akerbp.mlops.cli:main"]},
)
