"""akerbp.mlops: ship ML models to Cognite Data Fusion, or to a local CDF on your laptop."""

__version__ = "0.1.0"
