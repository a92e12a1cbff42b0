"""The entry point of a deployed prediction service (the deploy step copies it to the folder root as handler.py):
function_handler.py's, without the `client` argument.

A prediction without analytics (settings analytics.enabled false) never uses a CDF client, and CDF builds one for
every call of a handler that names it: a fresh worker would pay about a second of cognite-sdk import and a token on
its first call, for nothing.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def handle(data, secrets, function_call_info):
    if sys.path[:1] != [str(ROOT)]:  # first, so the bundled akerbp.mlops wins over any installed copy
        if str(ROOT) in sys.path:
            sys.path.remove(str(ROOT))
        sys.path.insert(0, str(ROOT))
    try:
        from akerbp.mlops.services.function_handler import serve
    except Exception as e:
        import traceback

        traceback.print_exc()
        return {
            "status": "error",
            "message": f"the akerbp.mlops runtime bundled in {ROOT} cannot be imported: {type(e).__name__}: {e}",
        }
    return serve(ROOT, data, None, secrets, function_call_info)
