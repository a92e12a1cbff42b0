"""akerbp.mlops: ship ML models to Cognite Data Fusion, or to a local CDF on your laptop."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import akerbp.mlops` (done by every deployed function and CLI call) does not import pydantic.
    if name == "ModelSettings":
        from akerbp.mlops.settings import ModelSettings

        return ModelSettings
    raise AttributeError(f"module 'akerbp.mlops' has no attribute {name!r}")
