"""The entry point of a batch function (function.py copies it to the folder root as handler.py, in place of the
live prediction function's): it names `client`, which the batch engine reads and writes files with.

Standard library only until the bundled akerbp.mlops is first on sys.path, as the services' handlers do.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def handle(data, client, secrets, function_call_info):
    if sys.path[:1] != [str(ROOT)]:  # first, so the bundled akerbp.mlops wins over any installed copy
        if str(ROOT) in sys.path:
            sys.path.remove(str(ROOT))
        sys.path.insert(0, str(ROOT))
    try:
        from akerbp.mlops.batch.engine import handle as serve
    except Exception as e:
        import traceback

        traceback.print_exc()
        return {"status": "error",
                "message": f"the batch engine bundled in {ROOT} cannot be imported: {type(e).__name__}: {e}"}
    return serve(ROOT, data, client, secrets, function_call_info)
