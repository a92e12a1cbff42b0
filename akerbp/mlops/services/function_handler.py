"""The entry point of a deployed akerbp.mlops training service or automation function; the deploy step copies it to
the folder root as handler.py (a prediction service's too when it records analytics, whose rows it writes with the
call's client; without analytics it is prediction_handler.py: the same without `client`).

CDF finds `handle` by parsing this file, and injects the arguments it names. The folder holding this file is the
root of the function: model code, artifact and the bundled akerbp.mlops runtime import from there.
"""
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def handle(data, client, secrets, function_call_info):
    return serve(ROOT, data, client, secrets, function_call_info)


def serve(root, data, client, secrets, function_call_info):
    """One call of the function whose folder is `root` (prediction_handler.py's handle calls it without a client)."""
    if sys.path[:1] != [str(root)]:  # first, so the bundled akerbp.mlops wins over any installed copy
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))
    try:
        from akerbp.mlops.services import runtime
    except Exception as e:
        traceback.print_exc()
        return {
            "status": "error",
            "message": f"the akerbp.mlops runtime bundled in {root} cannot be imported: {type(e).__name__}: {e}",
        }
    return runtime.handle(data, client, secrets, function_call_info, root=root)
