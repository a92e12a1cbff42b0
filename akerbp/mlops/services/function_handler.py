"""The entry point of a deployed akerbp.mlops service; the deploy step copies it to the folder root as handler.py.

CDF finds `handle` by parsing this file, and injects the arguments it names. The folder holding this file is the
root of the function: model code, artifact and the bundled akerbp.mlops runtime import from there.
"""
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def handle(data, client, secrets, function_call_info):
    if sys.path[:1] != [str(ROOT)]:  # first, so the bundled akerbp.mlops wins over any installed copy
        if str(ROOT) in sys.path:
            sys.path.remove(str(ROOT))
        sys.path.insert(0, str(ROOT))
    try:
        from akerbp.mlops.services import runtime
    except Exception as e:
        traceback.print_exc()
        return {
            "status": "error",
            "message": f"the akerbp.mlops runtime bundled in {ROOT} cannot be imported: {type(e).__name__}: {e}",
        }
    return runtime.handle(data, client, secrets, function_call_info, root=ROOT)
