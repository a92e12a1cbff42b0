"""An offline CDF: an HTTP server speaking the subset of the CDF REST API that cognite-sdk 8.x uses.

It knows nothing of akerbp.mlops and could be published on its own:

    from akerbp.mlops.local_cdf import LocalCDF
    with LocalCDF(".mlops/local-cdf") as cdf:
        client = cdf.client(project="test")      # a real CogniteClient
"""
from .server import Limits, LocalCDF

__all__ = ["LocalCDF", "Limits"]
